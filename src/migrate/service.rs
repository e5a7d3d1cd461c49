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
use super::readiness::{self, FindingCode, ReadinessReport};
use super::report::{
    Capabilities, DirectoryCounts, IdPair, Lag, MatchRule, MigrationStatus, MirrorHealth, Progress,
    ProgressSink, PushOutcome, TargetCheck, VerifyReport, MIRROR_BEHIND_SECONDS,
};
use super::target::{self, Events};
use crate::clock::Timestamp;
use crate::config::MigrationPolicy;
use crate::scim::schema::ResourceType;
use crate::secret::Secret;
use crate::store::{LastVerify, MigrationState, Phase, Store, KEPT_DIFFERENCES};

/// SCIM writes: accepted, paused for a cut-over, or refused for good.
pub(crate) const WRITES_OPEN: u8 = 0;
pub(crate) const WRITES_PAUSED: u8 = 1;
pub(crate) const WRITES_CUT_OVER: u8 = 2;

/// Longest a cut-over waits for the mirror to catch up.
const DRAIN_DEADLINE: Duration = Duration::from_secs(120);
/// A long step that has reported nothing for this long says that it is still working
/// (the CLI gives up on a silent control socket).
const HEARTBEAT: Duration = Duration::from_secs(10);

/// Runs `work` (which reports through the `Events` it is given) while forwarding its
/// reports to `progress`, and a `Working` line whenever it has been silent for
/// `HEARTBEAT`.
async fn drive<T>(
    step: &str,
    progress: ProgressSink<'_>,
    work: impl std::future::Future<Output = T>,
    mut rx: tokio::sync::mpsc::UnboundedReceiver<Progress>,
) -> T {
    let mut work = std::pin::pin!(work);
    let mut beat = tokio::time::interval(HEARTBEAT);
    beat.tick().await;
    loop {
        tokio::select! {
            out = &mut work => {
                while let Ok(p) = rx.try_recv() {
                    progress(p);
                }
                return out;
            }
            Some(p) = rx.recv() => {
                progress(p);
                beat.reset();
            }
            _ = beat.tick() => progress(Progress::Working { step: step.to_owned() }),
        }
    }
}

fn channel() -> (Events, tokio::sync::mpsc::UnboundedReceiver<Progress>) {
    tokio::sync::mpsc::unbounded_channel()
}

pub(crate) struct Migration {
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
pub(crate) struct PushRequest {
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
    /// Push without the attributes the target cannot hold (else the push refuses
    /// before writing anything, naming them).
    #[serde(default)]
    pub omit_unsupported: bool,
    /// Requests in flight at once (None: the default, 8; at most 64).
    #[serde(default)]
    pub parallel: Option<usize>,
}

/// What `migrate cutover` did.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct CutoverReport {
    /// The SCIM URL the identity provider must now use.
    pub target: Option<String>,
    /// Why the database file could not be rewritten without the target token (it is
    /// no longer in the migration state; the rewrite is retried at the next start).
    #[serde(default)]
    pub erase_error: Option<String>,
}

impl Migration {
    /// Loads the persisted state (a cut-over bridge refuses writes from the start).
    pub(crate) fn new(store: Store, policy: MigrationPolicy) -> MigrateResult<Arc<Migration>> {
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
    pub(crate) fn write_refusal(&self) -> Option<(u16, String)> {
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
    pub(crate) fn policy_view(&self) -> MigrateResult<PolicyView> {
        let stored = self.store.snapshot()?.migration_policy()?;
        Ok(PolicyView::resolve(&stored, &self.policy))
    }

    /// Stores the given fields of the policy (`migrate policy set`, the Migration
    /// page); the next readiness check applies them.
    pub(crate) async fn set_policy(&self, change: PolicyChange) -> MigrateResult<PolicyView> {
        let change = change.normalised().map_err(MigrateError::InvalidPolicy)?;
        let stored = self
            .store
            .update_migration_policy(move |p| change.apply(p))
            .await?;
        Ok(PolicyView::resolve(&stored, &self.policy))
    }

    /// Forgets the stored value of `fields` (all when empty): the file's or the
    /// default applies again.
    pub(crate) async fn reset_policy(&self, fields: Vec<PolicyField>) -> MigrateResult<PolicyView> {
        let stored = self
            .store
            .update_migration_policy(move |p| super::policy::reset(p, &fields))
            .await?;
        Ok(PolicyView::resolve(&stored, &self.policy))
    }

    /// The persisted state, secrets included (for the state machine only).
    pub(crate) fn state(&self) -> MigrateResult<MigrationState> {
        Ok(self.store.snapshot().and_then(|s| s.migration_state())?)
    }

    fn client_for(state: &MigrationState) -> MigrateResult<Client> {
        let url = state.target.as_deref().ok_or(MigrateError::NoTarget)?;
        let target = Target::parse(url, state.allow_http)?;
        let token = state
            .token
            .clone()
            .ok_or(if state.phase == Phase::CutOver {
                MigrateError::TokenErasedAtCutover
            } else {
                MigrateError::NoTargetToken
            })?;
        Client::new(target, token, state.cacert.as_deref().map(str::as_bytes))
    }

    /// Readiness report; moves `not started` to `checked` when nothing blocks.
    pub(crate) async fn check(&self) -> MigrateResult<ReadinessReport> {
        let snapshot = self.store.snapshot()?;
        let policy = PolicyView::resolve(&snapshot.migration_policy()?, &self.policy).effective();
        let report = readiness::check(&snapshot, &policy)?;
        readiness::LastCheck::remember(&self.store, Timestamp::now(), &report).await?;
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

    /// What a target can hold, before any write: its capabilities and the attributes
    /// of the directory it does not define (`migrate check --to`).
    pub(crate) async fn check_target(&self, req: PushRequest) -> MigrateResult<TargetCheck> {
        let (target, mut client) = connect(&req)?;
        let d = target::discover(&mut client).await?;
        let snapshot = self.store.snapshot()?;
        let held_by = push::unsupported_counts(&snapshot, &d)?;
        Ok(TargetCheck {
            target: target.base,
            capabilities: d.caps,
            unsupported: held_by.keys().cloned().collect(),
            held_by,
        })
    }

    /// The initial push (or its resumption), then mirroring.
    pub(crate) async fn push(
        &self,
        req: PushRequest,
        progress: ProgressSink<'_>,
    ) -> MigrateResult<PushOutcome> {
        let req = resumed_with_stored_tls(req, &self.state()?);
        let (target, mut client) = connect(&req)?;
        let _guard = self.lock.lock().await;
        let current = self.state()?;
        may_push_to(&current, &target)?;
        let readiness = self.readiness()?;
        // A dry run shows the plan with the blockers (README: it writes nothing);
        // a push refuses while there are any.
        if !readiness.ready && !req.dry_run {
            return Err(MigrateError::NotReady(
                readiness.blockers.into_iter().map(|b| b.message).collect(),
            ));
        }
        let opts = PushOptions {
            resume: current.phase == Phase::Pushing || current.push_incomplete,
            dry_run: req.dry_run,
            omit_unsupported: req.omit_unsupported,
            parallel: req.parallel.unwrap_or(0),
        };
        if req.dry_run {
            return self.plan(&mut client, &opts, &readiness, progress).await;
        }
        self.begin_push(&target, &req).await?;
        match self.run_push(&mut client, &opts, "pushing", progress).await {
            Ok(outcome) => self.finish_push(&mut client, outcome, progress).await,
            Err(e) => {
                self.record_stopped_push(current.phase, &e).await;
                match e {
                    // Refused before anything was sent: its own words say what to do.
                    MigrateError::Unsupported(_) | MigrateError::NeverAnswered(_) => Err(e),
                    e => Err(MigrateError::PushStopped(Box::new(e))),
                }
            }
        }
    }

    /// The readiness check under the policy that applies now (its blockers refuse a
    /// push, not its dry run).
    fn readiness(&self) -> MigrateResult<ReadinessReport> {
        let snapshot = self.store.snapshot()?;
        let policy = PolicyView::resolve(&snapshot.migration_policy()?, &self.policy).effective();
        Ok(readiness::check(&snapshot, &policy)?)
    }

    /// The dry run: the plan, with the readiness check's blockers and the protected
    /// groups it warned about; nothing is written and the state is left as it is.
    async fn plan(
        &self,
        client: &mut Client,
        opts: &PushOptions,
        readiness: &ReadinessReport,
        progress: ProgressSink<'_>,
    ) -> MigrateResult<PushOutcome> {
        let out = self.run_push(client, opts, "planning", progress).await?;
        Ok(match out {
            PushOutcome::Planned(mut plan) => {
                plan.blockers = readiness
                    .blockers
                    .iter()
                    .map(|b| b.message.clone())
                    .collect();
                plan.protected_groups = readiness
                    .warnings
                    .iter()
                    .filter(|w| w.code == FindingCode::ProtectedGroup)
                    .flat_map(|w| w.subjects.iter().map(|s| s.name.clone()))
                    .collect();
                PushOutcome::Planned(plan)
            }
            other => other,
        })
    }

    /// Records the start of a push: the target, its token and TLS choices, phase
    /// pushing; a new migration (not a resumption) also starts mirroring from the
    /// last change event and forgets what an earlier one learned.
    async fn begin_push(&self, target: &Target, req: &PushRequest) -> MigrateResult<()> {
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
                    s.not_kept.clear();
                    s.omitted.clear();
                    s.capabilities = None;
                    s.refused_filters.clear();
                } else {
                    // Another run of this migration's push: the last run's counts
                    // join the earlier ones, this run counts afresh.
                    let p = &mut s.progress;
                    p.earlier_created += std::mem::take(&mut p.created);
                    p.earlier_updated += std::mem::take(&mut p.updated);
                }
                s.phase = Phase::Pushing;
                s.target = Some(base);
                s.token = Some(r.token);
                s.cacert = r.cacert;
                s.allow_http = r.allow_http;
                s.updated_at = Some(now);
                s.last_error = None;
                s.mirror_failures = 0;
            })
            .await?;
        if let Ok(mut t) = self.target.write() {
            *t = Some(target.base.clone());
        }
        Ok(())
    }

    /// After a push that ran to its end: phase mirroring, then the target read back
    /// at once, every difference, account only on the target, attribute not kept and
    /// note of verify added to the report, with the run's request counts.
    async fn finish_push(
        &self,
        client: &mut Client,
        outcome: PushOutcome,
        progress: ProgressSink<'_>,
    ) -> MigrateResult<PushOutcome> {
        let now = Timestamp::now();
        self.store
            .update_migration(move |s| {
                s.phase = Phase::Mirroring;
                s.push_incomplete = false;
                s.updated_at = Some(now);
            })
            .await?;
        let mut verified = self.verify_locked(client, &mut *progress, true).await?;
        // A pushed resource the target holds otherwise (changed there by hand): sent
        // again and verified once more, so that running the push repairs it.
        let (mut repaired, mut repair_notes) = (Vec::new(), Vec::new());
        if verified.differences.iter().any(push::repairable) {
            let (tx, rx) = channel();
            client.report_to(Some(tx.clone()));
            let diffs = std::mem::take(&mut verified.differences);
            (repaired, repair_notes) = drive(
                "repairing",
                &mut *progress,
                push::repair(&self.store, client, &tx, &diffs),
                rx,
            )
            .await?;
            verified = self.verify_locked(client, progress, true).await?;
        }
        Ok(match outcome {
            PushOutcome::Pushed(mut report) => {
                report.repaired = repaired;
                report.notes.extend(repair_notes);
                report.differences = verified.differences;
                report.only_on_target = verified.only_on_target;
                report.not_kept = verified.not_kept;
                for n in verified.notes {
                    if !report.notes.contains(&n) {
                        report.notes.push(n);
                    }
                }
                report.requests = client.requests();
                report.throttled = client.throttled();
                PushOutcome::Pushed(report)
            }
            planned => planned,
        })
    }

    /// Records a push that stopped with `e`. Refused before anything was written:
    /// back to the phase it was in (`prior`). Else the mirror takes over the changes
    /// made since the start (the journal keeps what was pushed) and the push can be
    /// run again to finish.
    async fn record_stopped_push(&self, prior: Phase, e: &MigrateError) {
        let m = e.to_string();
        let nothing_written = matches!(
            e,
            MigrateError::Unsupported(_)
                | MigrateError::TokenRefused { .. }
                | MigrateError::NotScim { .. }
                | MigrateError::Tls(_)
                | MigrateError::NeverAnswered(_)
        );
        let _ = self
            .store
            .update_migration(move |s| {
                s.last_error = Some(m);
                if nothing_written {
                    s.phase = prior;
                    if prior == Phase::NotStarted || prior == Phase::Checked {
                        s.target = None;
                    }
                } else {
                    s.phase = Phase::Mirroring;
                    s.push_incomplete = true;
                }
            })
            .await;
    }

    /// Runs the push (or its dry run) with its progress forwarded to `progress`.
    async fn run_push(
        &self,
        client: &mut Client,
        opts: &PushOptions,
        step: &str,
        progress: ProgressSink<'_>,
    ) -> MigrateResult<PushOutcome> {
        let (tx, rx) = channel();
        client.report_to(Some(tx.clone()));
        drive(
            step,
            progress,
            push::push(&self.store, client, opts, &tx),
            rx,
        )
        .await
    }

    /// Replays pending changes to the target (the mirror's step). Returns how many.
    /// Every failed attempt is recorded as it happens (`record_mirror_failure`), so
    /// that status, pages and /metrics show a failing mirror from its first failure,
    /// not once the client has given up on a request.
    pub(crate) async fn mirror_step(
        &self,
        cached: &mut Option<MirrorClient>,
    ) -> MigrateResult<usize> {
        let mut retried = false;
        let result = self.replay_pending(cached, &mut retried).await;
        if let Err(e) = &result {
            // A request that failed every attempt was counted attempt by attempt;
            // its final message replaces the last reason.
            self.record_mirror_failure(e.to_string(), !retried).await;
        }
        result
    }

    /// `mirror_step`'s work; `retried` says whether a failed attempt was recorded.
    async fn replay_pending(
        &self,
        cached: &mut Option<MirrorClient>,
        retried: &mut bool,
    ) -> MigrateResult<usize> {
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
        let (tx, mut rx) = channel();
        client.report_to(Some(tx.clone()));
        let mut work = std::pin::pin!(push::drain(&self.store, client, 200, &tx));
        loop {
            tokio::select! {
                out = &mut work => return out,
                Some(p) = rx.recv() => {
                    if let Progress::Retrying { reason, .. } = p {
                        *retried = true;
                        self.record_mirror_failure(reason, true).await;
                    }
                }
            }
        }
    }

    /// Records a failure of the mirror: `reason` becomes the last error and, when
    /// `counted`, one more failed attempt in a row. The first is logged at WARN
    /// (the client logs each retry at INFO).
    async fn record_mirror_failure(&self, reason: String, counted: bool) {
        let logged = reason.clone();
        match self
            .store
            .update_migration(move |s| {
                if counted {
                    s.mirror_failures = s.mirror_failures.saturating_add(1);
                }
                s.last_error = Some(reason);
            })
            .await
        {
            Ok(s) if counted && s.mirror_failures == 1 => {
                tracing::warn!(error = %logged, "migration mirror: the first attempt failed; retrying")
            }
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(error = %e, reason = %logged, "migration mirror: cannot record a failed attempt")
            }
        }
    }

    /// State, lag and counts for `migrate status` and the admin page.
    pub(crate) fn status(&self) -> MigrateResult<MigrationStatus> {
        let snapshot = self.store.snapshot()?;
        let state = snapshot.migration_state()?;
        let now = Timestamp::now();
        let lag = if state.phase.is_mirroring() || state.phase == Phase::Pushing {
            push::lag(&snapshot, &state, now)?
        } else {
            Lag::default()
        };
        let capabilities = state
            .capabilities
            .as_ref()
            .and_then(|v| serde_json::from_value::<Capabilities>(v.clone()).ok());
        let rules = state
            .match_rules
            .iter()
            .filter_map(|(k, v)| {
                serde_json::from_value::<MatchRule>(serde_json::Value::String(k.clone()))
                    .ok()
                    .or_else(|| rule_from_text(k))
                    .map(|r| (r, *v))
            })
            .collect();
        let mirror = mirror_health(&state, &lag);
        Ok(MigrationStatus {
            capabilities,
            rules,
            phase: state.phase,
            phase_text: phase_text(&state, mirror),
            mirror,
            state: state.public(),
            lag,
            mapped: snapshot.mapped_count()?,
            directory: DirectoryCounts {
                users: snapshot.count(ResourceType::User)?,
                groups: snapshot.count(ResourceType::Group)?,
                memberships: snapshot.membership_count()?,
            },
        })
    }

    /// Drains the mirror, then compares the target with the directory. After the
    /// cut-over (the stored token is gone) it only compares, with `token` (from
    /// `migrate verify --token-file`), used for this run and never stored; before,
    /// `token` replaces the stored one for this run.
    pub(crate) async fn verify(
        &self,
        token: Option<Secret>,
        cacert: Option<String>,
        progress: ProgressSink<'_>,
    ) -> MigrateResult<VerifyReport> {
        let mut state = self.state()?;
        let cut_over = state.phase == Phase::CutOver;
        if !state.phase.is_mirroring() && !cut_over {
            return Err(MigrateError::WrongPhase {
                step: Step::Verify,
                phase: state.phase,
            });
        }
        if token.is_some() {
            state.token = token;
        }
        if cacert.is_some() {
            state.cacert = cacert;
        }
        let _guard = self.lock.lock().await;
        let mut client = Self::client_for(&state)?;
        self.verify_locked(&mut client, progress, !cut_over).await
    }

    /// Compares, after draining the mirror and recording the outcome when
    /// `mirroring` (else the state is left as it is); the caller holds the lock.
    async fn verify_locked(
        &self,
        client: &mut Client,
        progress: ProgressSink<'_>,
        mirroring: bool,
    ) -> MigrateResult<VerifyReport> {
        let (tx, rx) = channel();
        client.report_to(Some(tx.clone()));
        let found = drive(
            "verifying",
            progress,
            async {
                while mirroring && push::drain(&self.store, client, 500, &tx).await? > 0 {}
                push::verify(&self.store, client, &tx).await
            },
            rx,
        )
        .await?;
        self.record_verified(found, mirroring).await
    }

    /// Keeps what a verification found for the Migration page and `migrate status`
    /// (when, how many, the first `KEPT_DIFFERENCES`, its notes), and while
    /// `mirroring` moves the phase to verified (none) or back from it (some): the
    /// same record whether verify, a push or a cut-over ran it.
    async fn record_verified(
        &self,
        found: push::Verified,
        mirroring: bool,
    ) -> MigrateResult<VerifyReport> {
        let diffs = found.differences;
        let n = diffs.len() as u64;
        let now = Timestamp::now();
        // Kept for the Migration page, whoever ran verify (the page or the CLI).
        let notes = found.notes.clone();
        let last = LastVerify {
            at: now,
            count: n,
            listed: diffs
                .iter()
                .take(KEPT_DIFFERENCES)
                .map(|d| d.listed())
                .collect(),
        };
        self.store
            .update_migration(move |s| {
                s.verify_notes = notes;
                s.last_verify = Some(last);
            })
            .await?;
        if mirroring {
            self.store
                .update_migration(move |s| {
                    s.differences = Some(n);
                    if n == 0 {
                        s.phase = Phase::Verified;
                        s.verified_at = Some(now);
                    } else if s.phase == Phase::Verified {
                        // Verified no longer: an earlier clean verify does not
                        // outlive one that found differences (issue 15 trial).
                        s.phase = Phase::Mirroring;
                        s.verified_at = None;
                    }
                })
                .await?;
        }
        Ok(VerifyReport {
            differences: diffs,
            count: n,
            only_on_target: found.only_on_target,
            not_kept: found.not_kept,
            notes: found.notes,
        })
    }

    /// The push's journal with names (`migrate id-map`): empty before a push.
    pub(crate) fn id_map(&self) -> MigrateResult<Vec<IdPair>> {
        push::id_pairs(&self.store.snapshot()?)
    }

    /// Stops mirroring and returns to not started; the local directory stays the
    /// source of truth.
    pub(crate) async fn abort(&self) -> MigrateResult<()> {
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
    pub(crate) async fn cutover(&self, progress: ProgressSink<'_>) -> MigrateResult<CutoverReport> {
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
            let (tx, rx) = channel();
            client.report_to(Some(tx.clone()));
            loop {
                let n = push::drain(&self.store, &mut client, 500, &tx).await?;
                if n == 0 {
                    break;
                }
                if tokio::time::Instant::now() > deadline {
                    return Err(MigrateError::DrainTimeout);
                }
            }
            progress(Progress::Drained);
            let found = drive(
                "verifying",
                progress,
                push::verify(&self.store, &mut client, &tx),
                rx,
            )
            .await?;
            // Recorded as any verify's: a refused cut-over leaves the migration
            // "not verified" with its differences on the Migration page.
            let mut diffs = self.record_verified(found, true).await?.differences;
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
            // Forgotten is not gone: redb keeps the freed pages that held it.
            let erase_error = match self.store.erase_target_token().await {
                Ok(()) => None,
                Err(e) => {
                    tracing::warn!(error = %e, "cut over, but the database file still holds the target token's bytes; the rewrite is retried at the next start");
                    Some(e.to_string())
                }
            };
            Ok(CutoverReport {
                target: state.target.clone(),
                erase_error,
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
pub(crate) struct MirrorClient {
    key: (Option<String>, Option<Secret>),
    client: Client,
}

/// The mirror: replays accepted changes to the target while a migration mirrors.
/// Runs in the server; survives restarts because its position is in the store.
pub(crate) async fn run_mirror(m: Arc<Migration>) {
    // A cut-over whose rewrite failed, or one made by a release without it: the
    // file may still hold the target token's bytes.
    if m.state()
        .is_ok_and(|s| s.phase == Phase::CutOver && !s.token_erased)
    {
        match m.store.erase_target_token().await {
            Ok(()) => tracing::info!(
                "rewrote the database file without the migration target's token (cut over)"
            ),
            Err(e) => {
                tracing::warn!(error = %e, "cannot rewrite the database file without the migration target's token")
            }
        }
    }
    // A push that was running when the server stopped is not running now: let the
    // mirror carry on and say that the push should be run again to finish.
    if m.state().is_ok_and(|s| s.phase == Phase::Pushing) {
        let _ = m
            .store
            .update_migration(|s| {
                if s.phase == Phase::Pushing {
                    s.phase = Phase::Mirroring;
                    s.push_incomplete = true;
                    s.last_error = Some(
                        "the push was interrupted (the server stopped); run `scimbridge migrate push` again to finish it".into(),
                    );
                }
            })
            .await;
    }
    // A database restored from a backup (which leaves the target token out) while
    // mirroring: say so at once, not at the first change that cannot be replayed.
    if m.state()
        .is_ok_and(|s| s.phase.is_mirroring() && s.token.is_none())
    {
        m.record_mirror_failure(MigrateError::NoTargetToken.to_string(), true)
            .await;
    }
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

/// The phase in words for `migrate status`: while mirroring, a last verification
/// that found differences is said ("mirroring (pushed; the last verify found 2
/// differences)"), never "verified"; so is a mirror that fails, waits for its
/// token or lags ("verified, but the mirror is failing: retrying (attempt 2)").
fn phase_text(s: &MigrationState, mirror: MirrorHealth) -> String {
    let phase = match (s.phase, s.differences) {
        (Phase::Mirroring, Some(n)) if n > 0 => format!(
            "{} (pushed; the last verify found {})",
            s.phase.as_str(),
            crate::plural::count(n, "difference", "differences")
        ),
        (phase, _) => phase.as_str().to_owned(),
    };
    match mirror.problem() {
        Some(p) => format!("{phase}, but the mirror is {p}"),
        None => phase,
    }
}

/// The migration's error in one line for the dashboard: the last error, with
/// "mirror retrying (attempt N)" while the mirror fails, and the missing token
/// while the mirror waits for one.
pub(crate) fn error_line(s: &MigrationState) -> Option<String> {
    match mirror_health(s, &Lag::default()) {
        MirrorHealth::Failing { attempt } => Some(format!(
            "mirror retrying (attempt {attempt}): {}",
            s.last_error.as_deref().unwrap_or("no reason recorded")
        )),
        MirrorHealth::NoToken => Some(MigrateError::NoTargetToken.to_string()),
        _ => s.last_error.clone(),
    }
}

/// How the mirror is doing, from the state (secrets included: a missing token is
/// what stops it) and its lag.
fn mirror_health(s: &MigrationState, lag: &Lag) -> MirrorHealth {
    if !s.phase.is_mirroring() {
        MirrorHealth::Off
    } else if s.token.is_none() {
        MirrorHealth::NoToken
    } else if s.mirror_failures > 0 {
        MirrorHealth::Failing {
            attempt: s.mirror_failures.saturating_add(1),
        }
    } else if lag.seconds > MIRROR_BEHIND_SECONDS {
        MirrorHealth::Behind
    } else {
        MirrorHealth::InStep
    }
}

/// A push is refused after a cut-over, and to another target than the one a
/// migration under way pushes to (`migrate abort` first).
fn may_push_to(current: &MigrationState, target: &Target) -> MigrateResult<()> {
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
    Ok(())
}

/// Reads a rule stored under its text (older states).
fn rule_from_text(t: &str) -> Option<MatchRule> {
    [
        MatchRule::Journal,
        MatchRule::ExternalId,
        MatchRule::UserName,
        MatchRule::DisplayName,
        MatchRule::Uniqueness,
        MatchRule::Recovered,
        MatchRule::Created,
    ]
    .into_iter()
    .find(|r| r.as_str() == t)
}

/// A push that resumes the migration under way (same target) without `--cacert`
/// or `--allow-http` keeps the choices stored by the push that started it: after a
/// restore from a backup (which keeps them, not the token) `migrate push
/// --token-file FILE` alone resumes.
fn resumed_with_stored_tls(mut req: PushRequest, current: &MigrationState) -> PushRequest {
    let resuming = matches!(
        current.phase,
        Phase::Pushing | Phase::Mirroring | Phase::Verified
    );
    let same = Target::parse(&req.target, true)
        .is_ok_and(|t| current.target.as_deref() == Some(t.base.as_str()));
    if resuming && same {
        if req.cacert.is_none() {
            req.cacert = current.cacert.clone();
        }
        req.allow_http |= current.allow_http;
    }
    req
}

/// The push target named by a request and a SCIM client for it (its token, and the
/// CA file's certificates when given).
fn connect(req: &PushRequest) -> MigrateResult<(Target, Client)> {
    let target = Target::parse(&req.target, req.allow_http)?;
    let client = Client::new(
        target.clone(),
        req.token.clone(),
        req.cacert.as_deref().map(str::as_bytes),
    )?;
    Ok((target, client))
}
