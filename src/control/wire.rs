//! The control socket's wire protocol: serde of the application layer's typed
//! values, one JSON document per line. The client sends one `Request` line; the
//! server answers with `Progress` lines while a long request runs and then one `Ok`
//! or `Error` line. Export and backup data follow the `Ok` line; import data follows
//! the request line. Secrets cross only in the fields marked for it (a newly issued
//! token, a push target's token, a setup code). Knows nothing of sockets.

use serde::{Deserialize, Serialize};

use crate::app::admin::{AccountInfo, SetupLink};
use crate::app::tokens::{IssueRequest, IssuedToken, TokenInfo};
use crate::clock::Timestamp;
use crate::migrate::export::Counts;
use crate::migrate::policy::{PolicyChange, PolicyField, PolicyView};
use crate::migrate::readiness::ReadinessReport;
use crate::migrate::report::{
    IdPair, MigrationStatus, Progress, PushOutcome, TargetCheck, VerifyReport,
};
use crate::migrate::service::{CutoverReport, PushRequest};

/// Largest request line the server reads.
pub(crate) const MAX_LINE: usize = 64 * 1024;

/// One request, one variant per command the CLI sends.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "kebab-case")]
pub(crate) enum Request {
    TokenIssue(IssueRequest),
    TokenList,
    TokenRevoke {
        /// The token's name (or id).
        name: String,
        /// Only the secrets a rotation superseded under the name.
        #[serde(default)]
        superseded: bool,
    },
    /// A successor under the token's name; the old secret stays valid, superseded.
    TokenRotate {
        name: String,
    },
    /// A consistent copy of the database, streamed back after the `Ok` line.
    Backup,
    /// The migration readiness report.
    MigrateCheck,
    /// What a target can hold (capabilities, unsupported attributes), before a push.
    MigrateCheckTarget(PushRequest),
    MigratePush(PushRequest),
    MigrateStatus,
    /// The push's journal: each resource's id here and on the target.
    MigrateIdMap,
    MigrateVerify {
        /// The target's token for this run only (`migrate verify --token-file`;
        /// after the cut-over none is stored).
        #[serde(with = "crate::secret::exposed_opt", default)]
        token: Option<crate::secret::Secret>,
        /// PEM CA certificate(s) to verify the target with for this run only
        /// (`migrate verify --cacert`); without it, the CA stored by the push.
        #[serde(default)]
        cacert: Option<String>,
    },
    MigrateAbort,
    /// Show, set or reset the stored migration policy.
    MigratePolicy(PolicyRequest),
    MigrateCutover {
        confirm_irreversible: bool,
    },
    /// The export file, streamed back after the `Ok` line.
    Export,
    /// An export file of `size` bytes follows the request line; import it.
    Import {
        size: u64,
    },
    /// A new one-time setup code for an account's password (without a name: the
    /// only account's, or the first account's while none exists).
    AdminResetPassword {
        #[serde(default)]
        name: Option<String>,
    },
    /// A new account and the one-time code that sets its password.
    AdminAdd {
        name: String,
    },
    AdminRemove {
        name: String,
    },
    AdminList,
}

/// What `migrate policy` asks.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "kebab-case")]
pub(crate) enum PolicyRequest {
    Show,
    Set(PolicyChange),
    /// Forget the stored value of these fields (all when empty).
    Reset {
        fields: Vec<PolicyField>,
    },
}

/// One line from the server.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Response {
    /// An intermediate report of a long request; more lines follow.
    Progress(Progress),
    /// The request succeeded. (Boxed: a reply is much larger than a progress line.)
    Ok(Box<Reply>),
    /// The request failed; the message says why and what to do.
    Error { message: String },
}

/// What a request produced.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "reply", content = "value", rename_all = "kebab-case")]
pub(crate) enum Reply {
    TokenIssued(IssuedToken),
    Tokens(Vec<TokenInfo>),
    /// The secrets revoked (several with `superseded`).
    TokenRevoked(Vec<TokenInfo>),
    TokenRotated(Rotated),
    SetupLink(SetupLink),
    AdminRemoved(AccountInfo),
    AdminAccounts(Vec<AccountInfo>),
    Readiness(ReadinessReport),
    TargetCheck(TargetCheck),
    Push(PushOutcome),
    Status(Box<MigrationStatus>),
    IdMap(Vec<IdPair>),
    Verify(VerifyReport),
    Aborted,
    CutOver(CutoverReport),
    /// Export data follows this line until the server closes the socket.
    Streaming,
    /// Backup data (`size` bytes) follows this line.
    Backup(BackupDone),
    /// The migration policy that applies, with sources.
    Policy(PolicyView),
    Imported(Imported),
}

/// A rotation: the old token, now superseded, and its successor with its secret.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Rotated {
    pub old: TokenInfo,
    pub new: IssuedToken,
}

/// A backup the server made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct BackupDone {
    pub users: u64,
    pub groups: u64,
    /// Bytes of the database copy that follow.
    pub size: u64,
}

/// An import the server made.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Imported {
    pub counts: Counts,
    /// When the imported file was exported.
    pub exported_at: Timestamp,
    /// One line per record the import repaired (an older export's extra primary
    /// values, userNames that are one name under the caseless rule).
    #[serde(default)]
    pub repaired: Vec<String>,
}

/// A value as one line: JSON and a newline.
pub(crate) fn line<T: Serialize>(value: &T) -> Vec<u8> {
    // Serializing these types cannot fail (string keys, no custom errors).
    let mut out = serde_json::to_vec(value).unwrap_or_default();
    out.push(b'\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret::Secret;
    use crate::store::Scope;

    #[test]
    fn requests_and_replies_round_trip() {
        let req = Request::TokenIssue(IssueRequest {
            name: "entra".into(),
            scope: Scope::ReadOnly,
            expires_in_days: Some(30),
        });
        let text = String::from_utf8(line(&req)).unwrap();
        assert!(
            text.starts_with(r#"{"cmd":"token-issue","name":"entra""#),
            "{text}"
        );
        assert!(matches!(
            serde_json::from_str::<Request>(&text).unwrap(),
            Request::TokenIssue(IssueRequest {
                expires_in_days: Some(30),
                ..
            })
        ));
        let resp = Response::Ok(Box::new(Reply::Backup(BackupDone {
            users: 1,
            groups: 2,
            size: 3,
        })));
        let back: Response = serde_json::from_slice(&line(&resp)).unwrap();
        assert!(
            matches!(back, Response::Ok(r) if matches!(*r, Reply::Backup(BackupDone { size: 3, .. })))
        );
    }

    #[test]
    fn an_older_clients_reset_request_still_reads() {
        let r: Request = serde_json::from_str(r#"{"cmd":"admin-reset-password"}"#).unwrap();
        assert!(matches!(r, Request::AdminResetPassword { name: None }));
        let r: Request = serde_json::from_str(r#"{"cmd":"token-revoke","name":"x"}"#).unwrap();
        assert!(matches!(
            r,
            Request::TokenRevoke {
                superseded: false,
                ..
            }
        ));
    }

    #[test]
    fn a_push_target_token_crosses_only_in_its_field() {
        let req = Request::MigratePush(PushRequest {
            target: "https://t/scim/v2".into(),
            token: Secret::new("target-secret"),
            cacert: None,
            allow_http: false,
            dry_run: true,
            omit_unsupported: false,
            parallel: None,
        });
        let text = String::from_utf8(line(&req)).unwrap();
        assert!(text.contains(r#""token":"target-secret""#), "{text}");
        assert!(!format!("{req:?}").contains("target-secret"));
    }
}
