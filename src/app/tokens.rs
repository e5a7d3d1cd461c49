//! SCIM bearer tokens as the admin page, the control socket and the CLI manage them:
//! issue (name rules, scope, expiry of at most `MAX_TOKEN_DAYS`), list (with each
//! token's state at a given time), rotate (a successor under the same name; the old
//! secret stays valid, superseded, until it is revoked) and revoke. Typed requests, results and errors;
//! the secret of a new token is a `Secret`, shown once by the edge that asked.
//! Knows neither HTTP nor the control wire nor redb (it calls the store's typed API).

use serde::{Deserialize, Serialize};

use crate::clock::Timestamp;
use crate::secret::Secret;
pub(crate) use crate::store::RevokeWhich;
pub(crate) use crate::store::TokenState;
use crate::store::{Scope, Store, StoreError, TokenRecord};

/// Longest token lifetime in days (ten years); also keeps the date arithmetic in range.
pub(crate) const MAX_TOKEN_DAYS: u32 = 3650;
/// Longest token name, in bytes.
pub(crate) const MAX_NAME_BYTES: usize = 100;

/// A token as shown to an admin: never its secret or hash. Its JSON form is what
/// `token list --json` prints.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct TokenInfo {
    pub id: String,
    pub name: String,
    pub scope: Scope,
    pub state: TokenState,
    pub created: Timestamp,
    pub last_used: Option<Timestamp>,
    pub expires: Option<Timestamp>,
    pub revoked: Option<Timestamp>,
    /// When a successor was issued under its name (`token rotate`).
    #[serde(default)]
    pub superseded: Option<Timestamp>,
    /// The quiet-time alarm in minutes (`app::liveness`); `None`: off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quiet_after_minutes: Option<u32>,
}

impl TokenInfo {
    /// The record as seen at `now`.
    pub(crate) fn at(t: TokenRecord, now: Timestamp) -> TokenInfo {
        TokenInfo {
            state: t.state(now),
            id: t.id,
            name: t.name,
            scope: t.scope,
            created: t.created,
            last_used: t.last_used,
            expires: t.expires,
            revoked: t.revoked,
            superseded: t.superseded,
            quiet_after_minutes: t.quiet_after_minutes,
        }
    }
}

/// What `token issue` asks for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct IssueRequest {
    /// `token_name`'s rule (trimmed), unique among active tokens.
    pub name: String,
    pub scope: Scope,
    /// Days until the token expires (at most `MAX_TOKEN_DAYS`); `None`: never.
    pub expires_in_days: Option<u32>,
}

/// A token just issued, with its secret: the only time the secret exists outside
/// the caller's hands (only its SHA-256 is stored).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct IssuedToken {
    pub token: TokenInfo,
    /// Crosses the control socket in this field only.
    #[serde(with = "crate::secret::exposed")]
    pub secret: Secret,
}

impl IssueRequest {
    /// The checks that need no data: the name (`token_name`) and the lifetime (1 to
    /// `MAX_TOKEN_DAYS` days, or none). Returns the name as it will be stored. The CLI
    /// runs them before it opens or creates a database, so a refused `token issue`
    /// creates nothing.
    pub(crate) fn check(&self) -> Result<String, TokenError> {
        let name = token_name(&self.name)?;
        if self
            .expires_in_days
            .is_some_and(|d| d == 0 || d > MAX_TOKEN_DAYS)
        {
            return Err(TokenError::Lifetime);
        }
        Ok(name)
    }
}

/// What a token of this scope is for, said to whoever just got its secret (the admin
/// page and `token issue` say the same). A read-write token is what an identity
/// provider provisions with. A read-only token answers GET and `POST .search` only
/// (Users, Groups and the discovery endpoints; every write answers 403 Forbidden,
/// `http::scim`'s write gate), so it is for reading, never for provisioning.
pub(crate) fn scope_use(scope: Scope) -> &'static str {
    match scope {
        Scope::ReadWrite => {
            "Paste it into your identity provider as the Secret Token (Entra ID) or API token (Okta)."
        }
        Scope::ReadOnly => {
            "It only reads (GET and POST .search on Users, Groups and the discovery endpoints): \
             use it for monitoring, reports and audits, scripts that export the directory, or \
             checking this directory against another system. It is not for provisioning: an \
             identity provider given it has every change refused (403 Forbidden)."
        }
    }
}

/// Who holds a token of this scope, as rotation and revocation messages name it:
/// "the identity provider" (read-write) or "the tools that read with it" (read-only).
pub(crate) fn scope_holder(scope: Scope) -> &'static str {
    match scope {
        Scope::ReadWrite => "the identity provider",
        Scope::ReadOnly => "the tools that read with it",
    }
}

/// Why a token operation was refused.
#[derive(Debug, thiserror::Error)]
pub(crate) enum TokenError {
    #[error(
        "a token name is 1 to {MAX_NAME_BYTES} letters, digits and . _ - @, starting with a \
         letter or digit, e.g. entra-prod (no spaces: the name is typed as a command-line \
         argument and written into log lines)"
    )]
    InvalidName,
    /// `--expires-in 0` would print a secret that is expired already (the trial).
    #[error("a token's lifetime must be 1 to {MAX_TOKEN_DAYS} days, or none (it never expires)")]
    Lifetime,
    #[error(
        "the quiet-time alarm must be off, or a number followed by m, h or d \
         from {QUIET_MIN_MINUTES}m to {}d (e.g. 6h)", QUIET_MAX_MINUTES / 1440
    )]
    QuietAfter,
    #[error("the operating system's random generator failed")]
    Random,
    #[error("no current token named \"{0}\" to rotate (token list shows them)")]
    NotRotatable(String),
    /// The store refused (a duplicate active name, no such token) or failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A new token's name as stored: trimmed, then 1 to `MAX_NAME_BYTES` ASCII letters,
/// digits and `. _ - @`, starting with a letter or digit, case kept. The name is an
/// argument of `token rotate|revoke NAME` (no space to quote, no leading `-` to read
/// as a flag) and a field of log lines and metric labels. Checked only when a token
/// is issued: a token named before this rule (issue 14's trial had "entra id") keeps
/// its name and keeps working, and `token rotate` keeps the name it has.
pub(crate) fn token_name(raw: &str) -> Result<String, TokenError> {
    let name = raw.trim();
    if super::is_plain_name(name, MAX_NAME_BYTES) {
        Ok(name.to_owned())
    } else {
        Err(TokenError::InvalidName)
    }
}

/// Issues a token: checks the name and expiry, generates 256 random bits, stores
/// the record with the secret's SHA-256.
pub(crate) async fn issue(
    store: &Store,
    req: IssueRequest,
    now: Timestamp,
) -> Result<IssuedToken, TokenError> {
    let name = req.check()?;
    let expires = req
        .expires_in_days
        .map(|d| now.saturating_add(time::Duration::days(i64::from(d))));
    let (record, secret, hash) =
        crate::auth::new_token(&name, req.scope, now, expires).map_err(|_| TokenError::Random)?;
    let record = store.add_token(record, hash).await?;
    Ok(IssuedToken {
        token: TokenInfo::at(record, now),
        secret,
    })
}

/// Shortest quiet-time alarm, in minutes: Entra ID provisions every 40 minutes.
pub(crate) const QUIET_MIN_MINUTES: u32 = 15;
/// Longest quiet-time alarm, in minutes (90 days).
pub(crate) const QUIET_MAX_MINUTES: u32 = 90 * 1440;

/// Parses a quiet-time alarm as an admin types it: `off` or empty → `None`, else a
/// whole number and a unit, `m` (minutes), `h` (hours) or `d` (days): `90m`,
/// `6h`, `2d` → minutes, from `QUIET_MIN_MINUTES` to `QUIET_MAX_MINUTES`.
pub(crate) fn parse_quiet_after(text: &str) -> Result<Option<u32>, TokenError> {
    let t = text.trim().to_ascii_lowercase();
    if t.is_empty() || t == "off" {
        return Ok(None);
    }
    let (number, per) = match t.as_bytes()[t.len() - 1] {
        b'm' => (&t[..t.len() - 1], 1),
        b'h' => (&t[..t.len() - 1], 60),
        b'd' => (&t[..t.len() - 1], 1440),
        _ => return Err(TokenError::QuietAfter),
    };
    let minutes = number
        .trim()
        .parse::<u32>()
        .ok()
        .and_then(|n| n.checked_mul(per))
        .filter(|m| (QUIET_MIN_MINUTES..=QUIET_MAX_MINUTES).contains(m))
        .ok_or(TokenError::QuietAfter)?;
    Ok(Some(minutes))
}

/// A quiet-time alarm as `parse_quiet_after` reads it back: `6h`, `90m`, `2d`.
pub(crate) fn quiet_after_text(minutes: u32) -> String {
    if minutes.is_multiple_of(1440) {
        format!("{}d", minutes / 1440)
    } else if minutes.is_multiple_of(60) {
        format!("{}h", minutes / 60)
    } else {
        format!("{minutes}m")
    }
}

/// Sets or (with `None`) turns off the quiet-time alarm of the unrevoked token with
/// this name (or id).
pub(crate) async fn set_quiet_after(
    store: &Store,
    name_or_id: String,
    minutes: Option<u32>,
    now: Timestamp,
) -> Result<TokenInfo, TokenError> {
    if minutes.is_some_and(|m| !(QUIET_MIN_MINUTES..=QUIET_MAX_MINUTES).contains(&m)) {
        return Err(TokenError::QuietAfter);
    }
    let record = store.set_token_quiet_after(name_or_id, minutes).await?;
    Ok(TokenInfo::at(record, now))
}

/// Every token (revoked and expired ones too), in the store's order.
pub(crate) fn list(store: &Store, now: Timestamp) -> Result<Vec<TokenInfo>, TokenError> {
    let tokens = store.snapshot().and_then(|s| s.tokens())?;
    Ok(tokens.into_iter().map(|t| TokenInfo::at(t, now)).collect())
}

/// Revokes the token with this name (or id) — with `RevokeWhich::Superseded`, the
/// superseded secrets a rotation left under the name; the next request with a
/// revoked secret is refused. A name that holds several valid secrets is refused
/// with `Only` (the message says how to choose).
pub(crate) async fn revoke(
    store: &Store,
    name_or_id: String,
    which: RevokeWhich,
    now: Timestamp,
) -> Result<Vec<TokenInfo>, TokenError> {
    let records = store.revoke_token(name_or_id, which, now).await?;
    Ok(records.into_iter().map(|r| TokenInfo::at(r, now)).collect())
}

/// The audit action of a revocation: `token.revoke_superseded` for a secret that a
/// rotation had superseded (`token revoke NAME --superseded`, or its Revoke button),
/// `token.revoke` for a token revoked outright.
pub(crate) fn revoke_action(revoked: &TokenInfo) -> &'static str {
    if revoked.superseded.is_some() {
        "token.revoke_superseded"
    } else {
        "token.revoke"
    }
}

/// `token rotate NAME`: issues a successor under the same name, with the same scope
/// and the same lifetime from now (none if the old one had none); the old secret
/// stays valid, shown as superseded, until it is revoked, never automatically (the
/// identity provider may keep using it until an admin pastes the new one).
pub(crate) async fn rotate(
    store: &Store,
    name_or_id: String,
    now: Timestamp,
) -> Result<(TokenInfo, IssuedToken), TokenError> {
    let current = store
        .snapshot()
        .and_then(|s| s.tokens())?
        .into_iter()
        .find(|t| {
            t.revoked.is_none()
                && t.superseded.is_none()
                && (t.name == name_or_id || t.id == name_or_id)
        });
    let Some(old) = current else {
        return Err(TokenError::NotRotatable(name_or_id));
    };
    let expires = old
        .expires
        .map(|e| now.saturating_add(e.since(old.created)));
    let (mut record, secret, hash) = crate::auth::new_token(&old.name, old.scope, now, expires)
        .map_err(|_| TokenError::Random)?;
    // The successor watches the same identity provider: it keeps the quiet alarm.
    record.quiet_after_minutes = old.quiet_after_minutes;
    // The store checks again, in the transaction, that `old` is still current.
    let (old, new) = store.rotate_token(old.id, record, hash, now).await?;
    Ok((
        TokenInfo::at(old, now),
        IssuedToken {
            token: TokenInfo::at(new, now),
            secret,
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> (tempfile::TempDir, Store) {
        let d = tempfile::tempdir().unwrap();
        let s = Store::open(&d.path().join("db"), &Default::default()).unwrap();
        (d, s)
    }

    /// The text `token issue` prints and the Tokens page shows: one sentence per scope,
    /// single-spaced (the read-only one printed runs of spaces in the terminal).
    #[test]
    fn what_a_token_is_for_reads_as_plain_sentences() {
        for scope in [Scope::ReadWrite, Scope::ReadOnly] {
            let text = scope_use(scope);
            assert!(!text.contains("  "), "{text}");
        }
        assert!(scope_use(Scope::ReadOnly).contains("endpoints): use it for monitoring"));
        assert!(scope_use(Scope::ReadOnly).contains("It is not for provisioning"));
    }

    fn req(name: &str, days: Option<u32>) -> IssueRequest {
        IssueRequest {
            name: name.into(),
            scope: Scope::ReadWrite,
            expires_in_days: days,
        }
    }

    fn at(text: &str) -> Timestamp {
        Timestamp::parse(text).unwrap()
    }

    #[tokio::test]
    async fn names_and_lifetimes_follow_the_rules() {
        let (_d, s) = store();
        for bad in [
            "",
            "   ",
            "a\u{7}b",
            &"x".repeat(101),
            "entra id",
            "-x",
            ".hidden",
            "okta\"prod",
            "é",
            "a/b",
        ] {
            let e = issue(&s, req(bad, None), at("2024-05-01T10:00:00Z"))
                .await
                .unwrap_err();
            assert!(matches!(e, TokenError::InvalidName), "{bad:?}: {e}");
        }
        for days in [0, MAX_TOKEN_DAYS + 1] {
            let e = issue(&s, req("idp", Some(days)), at("2024-05-01T10:00:00Z"))
                .await
                .unwrap_err();
            assert_eq!(
                e.to_string(),
                "a token's lifetime must be 1 to 3650 days, or none (it never expires)",
                "{days}"
            );
        }
        for good in ["Entra-Prod_2", "okta@example.com", "a", &"x".repeat(100)] {
            assert_eq!(token_name(good).unwrap(), good);
        }
        let t = issue(&s, req("  idp ", Some(1)), at("2024-05-01T10:00:00Z"))
            .await
            .unwrap();
        assert_eq!(t.token.name, "idp");
        assert_eq!(t.token.expires, Some(at("2024-05-02T10:00:00Z")));
        assert_eq!(t.token.state, TokenState::Active);
        assert_eq!(format!("{:?}", t.secret), "Secret(***)");
        let dup = issue(&s, req("idp", None), at("2024-05-01T10:00:00Z"))
            .await
            .unwrap_err();
        assert!(dup.to_string().contains("already exists"), "{dup}");
    }

    #[test]
    fn quiet_times_read_as_typed() {
        assert_eq!(parse_quiet_after("").unwrap(), None);
        assert_eq!(parse_quiet_after(" Off ").unwrap(), None);
        assert_eq!(parse_quiet_after("90m").unwrap(), Some(90));
        assert_eq!(parse_quiet_after("6H").unwrap(), Some(360));
        assert_eq!(parse_quiet_after("2d").unwrap(), Some(2880));
        for bad in ["6", "h", "-1h", "5m", "91d", "1.5h", "99999999999d", "é"] {
            assert!(parse_quiet_after(bad).is_err(), "{bad}");
        }
        for m in [90, 360, 2880, 15] {
            assert_eq!(parse_quiet_after(&quiet_after_text(m)).unwrap(), Some(m));
        }
    }

    #[tokio::test]
    async fn the_quiet_alarm_is_stored_per_token() {
        let (_d, s) = store();
        let now = at("2024-05-01T10:00:00Z");
        issue(&s, req("idp", None), now).await.unwrap();
        assert_eq!(list(&s, now).unwrap()[0].quiet_after_minutes, None);
        let t = set_quiet_after(&s, "idp".into(), Some(360), now)
            .await
            .unwrap();
        assert_eq!(t.quiet_after_minutes, Some(360));
        assert_eq!(list(&s, now).unwrap()[0].quiet_after_minutes, Some(360));
        assert!(set_quiet_after(&s, "idp".into(), Some(1), now)
            .await
            .is_err());
        set_quiet_after(&s, "idp".into(), None, now).await.unwrap();
        assert_eq!(list(&s, now).unwrap()[0].quiet_after_minutes, None);
        revoke(&s, "idp".into(), RevokeWhich::Only, now)
            .await
            .unwrap();
        let e = set_quiet_after(&s, "idp".into(), Some(60), now)
            .await
            .unwrap_err();
        assert!(e.to_string().contains("no active token"), "{e}");
    }

    #[tokio::test]
    async fn state_follows_expiry_and_revocation() {
        let (_d, s) = store();
        issue(&s, req("a", Some(1)), at("2024-05-01T10:00:00Z"))
            .await
            .unwrap();
        issue(&s, req("b", None), at("2024-05-01T10:00:00Z"))
            .await
            .unwrap();
        let later = at("2024-05-03T00:00:00Z");
        let states: Vec<(String, TokenState)> = list(&s, later)
            .unwrap()
            .into_iter()
            .map(|t| (t.name, t.state))
            .collect();
        assert!(states.contains(&("a".into(), TokenState::Expired)));
        assert!(states.contains(&("b".into(), TokenState::Active)));
        let r = revoke(&s, "b".into(), RevokeWhich::Only, later)
            .await
            .unwrap();
        let r = r.into_iter().next().unwrap();
        assert_eq!(r.state, TokenState::Revoked);
        let e = revoke(&s, "b".into(), RevokeWhich::Only, later)
            .await
            .unwrap_err();
        assert!(e.to_string().contains("no active token named"), "{e}");
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["state"], "revoked");
        assert_eq!(json["scope"], "read-write");
        assert!(json.get("lastUsed").is_some());
    }

    #[tokio::test]
    async fn rotation_keeps_the_old_secret_until_it_is_revoked() {
        let (_d, s) = store();
        let t0 = at("2024-05-01T10:00:00Z");
        let first = issue(&s, req("entra", Some(30)), t0).await.unwrap();
        let t1 = at("2024-05-11T10:00:00Z");
        let (old, new) = rotate(&s, "entra".into(), t1).await.unwrap();
        assert_eq!(
            (old.id.as_str(), old.state),
            (first.token.id.as_str(), TokenState::Superseded)
        );
        assert_eq!(new.token.name, "entra");
        assert_eq!(new.token.state, TokenState::Active);
        // The same scope and lifetime, from now.
        assert_eq!(new.token.expires, Some(at("2024-06-10T10:00:00Z")));
        // Both secrets authenticate; the old one is never revoked by itself.
        let accepted = |secret: &Secret| {
            let r = s
                .token_by_hash(&crate::auth::hash_secret(secret.expose()))
                .unwrap()
                .unwrap();
            r.state(at("2024-05-20T00:00:00Z")).accepted()
        };
        assert!(accepted(&first.secret) && accepted(&new.secret));
        // A name under rotation is unambiguous only with --superseded or an id.
        let e = revoke(&s, "entra".into(), RevokeWhich::Only, t1)
            .await
            .unwrap_err();
        assert!(e.to_string().contains("--superseded"), "{e}");
        assert!(issue(&s, req("entra", None), t1).await.is_err());
        // A second rotation supersedes the successor; the name then holds three.
        let (_, newest) = rotate(&s, "entra".into(), t1).await.unwrap();
        let gone = revoke(&s, "entra".into(), RevokeWhich::Superseded, t1)
            .await
            .unwrap();
        assert_eq!(gone.len(), 2);
        assert!(gone.iter().all(|t| t.state == TokenState::Revoked));
        assert!(!accepted(&first.secret) && !accepted(&new.secret) && accepted(&newest.secret));
        let none = revoke(&s, "entra".into(), RevokeWhich::Superseded, t1)
            .await
            .unwrap_err();
        assert!(none.to_string().contains("no superseded"), "{none}");
        // Now one secret again: revoking by name works as before.
        revoke(&s, "entra".into(), RevokeWhich::Only, t1)
            .await
            .unwrap();
        assert!(matches!(
            rotate(&s, "entra".into(), t1).await,
            Err(TokenError::NotRotatable(_))
        ));
    }
}
