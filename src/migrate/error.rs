//! `MigrateError`: every way a migration step (check, push, mirror, verify, abort,
//! cut-over, import) can fail, as one typed enum. Each edge turns it into its own
//! output in one place (the CLI's message and exit code, the admin page's message,
//! the control wire's error reply). Messages say what to do next. Knows nothing of
//! the edges.

use crate::scim::schema::ResourceType;
use crate::store::{AuditOutcome, EventOp, Phase, StoreError};

use super::export::ExportError;
use super::report::Difference;

/// A step of the state machine that needs a pushed, mirroring migration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Step {
    Verify,
    Cutover,
}

/// Why a migration step failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum MigrateError {
    /// The directory store failed or refused.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A migration policy value that cannot be right (the sentence says which).
    #[error("{0}")]
    InvalidPolicy(String),
    /// The target URL cannot be used (not a URL, no host, plain http off loopback).
    #[error("{0}")]
    InvalidTarget(String),
    /// TLS towards the target cannot be set up (CA file, system roots).
    #[error("{0}")]
    Tls(String),
    /// The target could not be reached or kept failing (after retries).
    #[error("{0}")]
    Unreachable(String),
    /// The first request of a step got no answer (`Client::first_contact`): nothing
    /// was sent, and a wrong URL or port is the likely cause.
    #[error("{0}; nothing was sent: check the URL and port (is the target up?), then run the same command again")]
    NeverAnswered(String),
    /// The target refused the bearer token (401/403 on discovery).
    #[error("the target refused the token ({status}); check --token-file")]
    TokenRefused { status: u16 },
    /// Discovery found no SCIM service at the URL.
    #[error("{url}/ServiceProviderConfig answered {status}: is this a SCIM 2.0 base URL?")]
    NotScim { url: String, status: u16 },
    /// The target answered a request with an error status.
    #[error("{action} answered {status}{}", detail_suffix(.detail))]
    TargetAnswered {
        /// What was asked, e.g. "creating user 0190… on the target".
        action: String,
        status: u16,
        /// The start of the target's body, or empty.
        detail: String,
    },
    /// The target refused to list a resource type without a filter (some hosted
    /// services answer only filtered searches, RFC 7644 §3.4.2 leaves it to them):
    /// the push and verify go on with lookups one resource at a time.
    #[error("listing the target's {endpoint} without a filter answered {status}{}", detail_suffix(.detail))]
    ListingRefused {
        /// "/Users" or "/Groups".
        endpoint: &'static str,
        status: u16,
        /// The start of the target's body, or empty.
        detail: String,
    },
    /// The target answered something this client cannot use.
    #[error("{0}")]
    TargetProtocol(String),
    /// A push while the bridge has already cut over.
    #[error("this bridge has already cut over; there is nothing left to push")]
    AlreadyCutOver,
    /// An abort after cut-over.
    #[error("the bridge has cut over; a cut-over cannot be undone")]
    CutOverIsFinal,
    /// A push to another target while a migration is under way.
    #[error("a migration to {current} is under way; run `scimbridge migrate abort` before pushing to {requested}")]
    OtherTarget { current: String, requested: String },
    /// The readiness check has blockers (their messages).
    #[error("the readiness check has blockers; run `scimbridge migrate check`:\n  {}", .0.join("\n  "))]
    NotReady(Vec<String>),
    /// Verify or cut-over before the push.
    #[error("{} the migration is {}", step_needs(*.step), .phase.as_str())]
    WrongPhase { step: Step, phase: Phase },
    /// The stored state has no target.
    #[error("no migration target is set")]
    NoTarget,
    /// The migration is under way but no target token is stored: a backup leaves
    /// it out, so a database restored from one holds none. The mirror waits for it
    /// and `migrate push --token-file FILE` (the stored target) resumes.
    #[error("no target token is stored in this database (a backup leaves it out: was it restored from one?); \
             the mirror is stopped until `scimbridge migrate push --token-file FILE` resumes the migration \
             (the stored target URL is used)")]
    NoTargetToken,
    /// After the cut-over, verify needs the target token, which the cut-over erased.
    #[error("no target token is stored (the cut-over erased it); pass it for this run with `scimbridge migrate verify --token-file FILE`")]
    TokenErasedAtCutover,
    /// The cut-over was not confirmed.
    #[error("cut-over is irreversible: confirm it explicitly")]
    NotConfirmed,
    /// The mirror did not reach zero lag before the cut-over deadline.
    #[error("the mirror did not catch up in time; writes resume, try again")]
    DrainTimeout,
    /// The cut-over's verification found differences.
    #[error("verification found {}; not cutting over. First: {first}", crate::plural::count(*count as u64, "difference", "differences"))]
    Differences {
        count: usize,
        first: Box<Difference>,
    },
    /// The directory holds attributes the target does not define (by name); the
    /// push refuses before writing anything.
    #[error("the target cannot hold these attributes of the directory: {}. Nothing was sent. \
             Add them to the target's schema, or re-run with --omit-unsupported to push without them \
             (verify will list them as not kept by the target)", .0.join(", "))]
    Unsupported(Vec<String>),
    /// The push stopped part-way; what it did is in the journal.
    #[error("{inner}\n{hint}", inner = .0, hint = stopped_hint(.0))]
    PushStopped(Box<MigrateError>),
    /// Replaying one change event to the target failed.
    #[error("mirroring event {seq} ({op} {} {id}): {source}", resource_type.name())]
    Mirror {
        seq: u64,
        op: EventOp,
        resource_type: ResourceType,
        id: String,
        source: Box<MigrateError>,
    },
    /// An export file could not be read, verified or imported.
    #[error(transparent)]
    Export(#[from] ExportError),
    /// A background task of the step died (a bug; the log has details).
    #[error("the {0} task failed")]
    TaskFailed(&'static str),
}

fn detail_suffix(detail: &str) -> String {
    if detail.is_empty() {
        String::new()
    } else {
        format!(": {detail}")
    }
}

/// What to do after a stopped push: a passing failure resumes when run again; a
/// deterministic one (the target refused something) would only fail the same way.
fn stopped_hint(e: &MigrateError) -> &'static str {
    if e.is_transient() {
        "The push stopped; run the same command again to resume where it stopped."
    } else {
        "The push stopped; running it again will fail the same way until the cause above is fixed \
         (what was pushed so far is kept and will not be sent twice). If the target's copy was \
         changed by hand and the cause is a resource of the journal, `scimbridge migrate abort` \
         then `scimbridge migrate push` starts again from an empty journal (what is already on \
         the target is matched by userName, externalId or displayName, not doubled)."
    }
}

impl MigrateError {
    /// How the step ended, for the audit (Activity), in the words of the traffic
    /// chart: failed when the target or the way to it failed (unreachable, TLS, 5xx,
    /// a timeout, an answer that is not SCIM), denied when it did not accept the
    /// token (401/403), refused otherwise (a 4xx of the target, or this bridge
    /// refusing the step).
    pub(crate) fn audit_outcome(&self) -> AuditOutcome {
        let of_status = |status: u16| match status {
            401 | 403 => AuditOutcome::Denied,
            500.. => AuditOutcome::Failed,
            _ => AuditOutcome::Refused,
        };
        match self {
            MigrateError::Unreachable(_)
            | MigrateError::NeverAnswered(_)
            | MigrateError::Tls(_)
            | MigrateError::Store(_)
            | MigrateError::TaskFailed(_)
            | MigrateError::TargetProtocol(_)
            | MigrateError::DrainTimeout => AuditOutcome::Failed,
            MigrateError::TokenRefused { status } => of_status(*status),
            MigrateError::TargetAnswered { status, .. }
            | MigrateError::ListingRefused { status, .. }
            | MigrateError::NotScim { status, .. } => of_status(*status),
            MigrateError::Mirror { source, .. } | MigrateError::PushStopped(source) => {
                source.audit_outcome()
            }
            _ => AuditOutcome::Refused,
        }
    }

    /// Could running the same step again succeed without anything changing? (The
    /// target was unreachable, overloaded or failing; not when it refused.)
    pub(crate) fn is_transient(&self) -> bool {
        match self {
            MigrateError::Unreachable(_)
            | MigrateError::NeverAnswered(_)
            | MigrateError::Store(_)
            | MigrateError::TaskFailed(_) => true,
            MigrateError::TargetAnswered { status, .. } => *status >= 500 || *status == 429,
            MigrateError::Mirror { source, .. } | MigrateError::PushStopped(source) => {
                source.is_transient()
            }
            _ => false,
        }
    }
}

fn step_needs(step: Step) -> &'static str {
    match step {
        Step::Verify => "verification needs a pushed migration;",
        Step::Cutover => "cut-over needs a pushed, mirroring migration;",
    }
}

/// Shorthand for results of migration steps.
pub(crate) type MigrateResult<T> = Result<T, MigrateError>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_name_the_remedy() {
        let e = MigrateError::WrongPhase {
            step: Step::Cutover,
            phase: Phase::Checked,
        };
        assert_eq!(
            e.to_string(),
            "cut-over needs a pushed, mirroring migration; the migration is checked"
        );
        let e = MigrateError::PushStopped(Box::new(MigrateError::Unreachable(
            "GET https://x/Users failed after 8 attempts: 503".into(),
        )));
        assert!(
            e.to_string()
                .ends_with("run the same command again to resume where it stopped."),
            "{e}"
        );
        // A refusal is not "resume": it would fail the same way.
        let e = MigrateError::PushStopped(Box::new(MigrateError::TargetAnswered {
            action: "creating user 1 on the target".into(),
            status: 400,
            detail: String::new(),
        }));
        assert!(e
            .to_string()
            .starts_with("creating user 1 on the target answered 400\n"));
        assert!(!e.to_string().contains("resume"), "{e}");
        assert!(
            e.to_string()
                .contains("`scimbridge migrate abort` then `scimbridge migrate push`"),
            "{e}"
        );
        let e = MigrateError::NotReady(vec!["a".into(), "b".into()]);
        assert!(e.to_string().ends_with(":\n  a\n  b"), "{e}");
    }

    #[test]
    fn audit_outcomes_use_the_charts_words() {
        let answered = |status| MigrateError::TargetAnswered {
            action: "creating user 1 on the target".into(),
            status,
            detail: String::new(),
        };
        // Issue 15 trial: a TLS failure was "refused" on the Activity page.
        let tls = MigrateError::Tls("TLS with https://x failed: invalid peer certificate".into());
        assert_eq!(tls.audit_outcome(), AuditOutcome::Failed);
        let down = MigrateError::Unreachable("cannot connect to https://x".into());
        assert_eq!(
            MigrateError::PushStopped(Box::new(down)).audit_outcome(),
            AuditOutcome::Failed
        );
        assert_eq!(answered(503).audit_outcome(), AuditOutcome::Failed);
        assert_eq!(answered(400).audit_outcome(), AuditOutcome::Refused);
        assert_eq!(answered(403).audit_outcome(), AuditOutcome::Denied);
        assert_eq!(
            MigrateError::TokenRefused { status: 401 }.audit_outcome(),
            AuditOutcome::Denied
        );
        assert_eq!(
            MigrateError::NotConfirmed.audit_outcome(),
            AuditOutcome::Refused
        );
    }
}
