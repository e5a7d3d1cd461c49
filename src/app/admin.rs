//! Admin-page credentials as the admin page, the control socket and the CLI manage
//! them: one-time setup codes (printed at first start, or by `admin reset-password`),
//! setting the password with a code, and checking a password at sign-in. The rules
//! (192-bit codes valid an hour and stored only hashed, PBKDF2 for passwords, a code
//! consumed in the same transaction that sets the password) live here and in
//! `auth::admin`. Knows neither HTTP nor the control wire nor redb.

use serde::{Deserialize, Serialize};

use crate::auth::admin as creds;
use crate::clock::Timestamp;
use crate::secret::Secret;
use crate::store::{SetupCode, SetupRefusal, Store, StoreError};

/// A new one-time setup code, and the link to use it when the server has announced
/// its admin URL.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct SetupLink {
    /// Crosses the control socket in this field only.
    #[serde(with = "crate::secret::exposed")]
    pub code: Secret,
    /// `https://HOST:PORT/admin/setup?code=…`, when the admin URL is known (it
    /// holds the code, so it is a secret too).
    #[serde(with = "crate::secret::exposed_opt")]
    pub link: Option<Secret>,
    /// When the code stops working.
    pub expires: Timestamp,
}

/// What a starting server does about the admin password.
#[derive(Debug)]
pub(crate) enum FirstRun {
    /// A password is set: nothing to do.
    PasswordSet,
    /// A code printed by `admin reset-password` is still valid: keep it.
    ResetPending,
    /// A fresh code, to be logged as a setup link.
    Issued(Secret),
}

/// Why a credential operation failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum CredentialError {
    #[error("the operating system's random generator failed")]
    Random,
    /// The setup code is unknown, used, replaced or expired.
    #[error("the setup code was refused")]
    Refused(SetupRefusal),
    /// The new password breaks a rule (the sentence names it).
    #[error("{0}")]
    WeakPassword(String),
    /// The hashing task died (a bug).
    #[error("the password could not be hashed")]
    Hashing,
    #[error(transparent)]
    Store(#[from] StoreError),
}

async fn store_new_code(
    store: &Store,
    now: Timestamp,
    from_reset: bool,
) -> Result<(Secret, Timestamp), CredentialError> {
    let (code, hash) = creds::new_setup_code().map_err(|_| CredentialError::Random)?;
    let expires = now.saturating_add(creds::SETUP_CODE_LIFETIME);
    store
        .set_admin_setup_code(SetupCode {
            hash,
            expires,
            from_reset,
        })
        .await?;
    Ok((code, expires))
}

/// `admin reset-password`: a new one-time code replacing any pending one; the
/// current password keeps working until the code is used.
pub(crate) async fn reset_password(
    store: &Store,
    now: Timestamp,
) -> Result<SetupLink, CredentialError> {
    let (code, expires) = store_new_code(store, now, true).await?;
    let url = store.snapshot().and_then(|s| s.admin_url())?;
    let link = url.map(|u| Secret::new(format!("{u}/setup?code={}", code.expose())));
    Ok(SetupLink {
        code,
        link,
        expires,
    })
}

/// At server start: records the admin URL and, while no password is set, issues a
/// code unless one printed by `admin reset-password` is still valid.
pub(crate) async fn first_run(
    store: &Store,
    admin_url: String,
    now: Timestamp,
) -> Result<FirstRun, CredentialError> {
    store.set_admin_url(admin_url).await?;
    let snapshot = store.snapshot()?;
    if snapshot.admin_password()?.is_some() {
        return Ok(FirstRun::PasswordSet);
    }
    if let Some(pending) = snapshot.admin_setup_code()? {
        if pending.from_reset && pending.expires > now {
            return Ok(FirstRun::ResetPending);
        }
    }
    drop(snapshot);
    let (code, _) = store_new_code(store, now, false).await?;
    Ok(FirstRun::Issued(code))
}

/// Whether an admin password is set (a store failure counts as set: the page then
/// offers sign-in, not setup).
pub(crate) fn password_is_set(store: &Store) -> bool {
    store
        .snapshot()
        .and_then(|s| s.admin_password())
        .map(|p| p.is_some())
        .unwrap_or(true)
}

/// Whether `code` is the pending, unexpired setup code.
pub(crate) fn check_setup_code(
    store: &Store,
    code: &str,
    now: Timestamp,
) -> Result<(), SetupRefusal> {
    if code.is_empty() || code.len() > 200 {
        return Err(SetupRefusal::Unknown);
    }
    store
        .snapshot()
        .and_then(|s| s.check_admin_setup_code(&creds::setup_code_hash(code), now))
        .unwrap_or(Err(SetupRefusal::Unknown))
}

/// Sets the admin password with a setup code: checks the code and the password
/// rules, hashes off the async runtime (PBKDF2, slow on purpose), and stores the
/// password while consuming the code in one transaction.
pub(crate) async fn set_password(
    store: &Store,
    code: &str,
    password: String,
    confirm: &str,
    now: Timestamp,
) -> Result<(), CredentialError> {
    check_setup_code(store, code, now).map_err(CredentialError::Refused)?;
    if let Some(problem) = creds::password_problem(&password, confirm) {
        return Err(CredentialError::WeakPassword(problem));
    }
    let record = tokio::task::spawn_blocking(move || {
        creds::hash_password(&password, now, creds::PBKDF2_ITERATIONS)
    })
    .await
    .map_err(|_| CredentialError::Hashing)?
    .map_err(|_| CredentialError::Random)?;
    store
        .complete_admin_setup(creds::setup_code_hash(code), now, record)
        .await?
        .map_err(CredentialError::Refused)
}

/// Whether `password` is the admin password (false when none is set). Hashing runs
/// off the async runtime.
pub(crate) async fn verify_password(store: &Store, password: String) -> Result<bool, StoreError> {
    let Some(record) = store.snapshot().and_then(|s| s.admin_password())? else {
        return Ok(false);
    };
    Ok(
        tokio::task::spawn_blocking(move || creds::verify_password(&record, &password))
            .await
            .unwrap_or(false),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_reset_code_survives_a_restart_and_sets_the_password_once() {
        let d = tempfile::tempdir().unwrap();
        let s = Store::open(&d.path().join("db"), &Default::default()).unwrap();
        let now = Timestamp::now();
        let FirstRun::Issued(first) = first_run(&s, "https://h/admin".into(), now).await.unwrap()
        else {
            panic!("no password yet: a code is issued");
        };
        let reset = reset_password(&s, now).await.unwrap();
        assert_eq!(
            reset.link.as_ref().map(Secret::expose),
            Some(format!("https://h/admin/setup?code={}", reset.code.expose()).as_str())
        );
        assert!(format!("{reset:?}").contains("***"));
        assert!(!format!("{reset:?}").contains(reset.code.expose()));
        // A restart keeps the printed code; the first one was replaced.
        assert!(matches!(
            first_run(&s, "https://h/admin".into(), now).await.unwrap(),
            FirstRun::ResetPending
        ));
        assert_eq!(
            check_setup_code(&s, first.expose(), now),
            Err(SetupRefusal::Unknown)
        );
        let code = reset.code.expose();
        let weak = set_password(&s, code, "short".into(), "short", now).await;
        assert!(matches!(weak, Err(CredentialError::WeakPassword(_))));
        let pw = "correct horse battery";
        set_password(&s, code, pw.into(), pw, now).await.unwrap();
        assert!(password_is_set(&s));
        assert!(verify_password(&s, pw.into()).await.unwrap());
        assert!(!verify_password(&s, "wrong".into()).await.unwrap());
        let again = set_password(&s, code, pw.into(), pw, now).await;
        assert!(matches!(
            again,
            Err(CredentialError::Refused(SetupRefusal::Unknown))
        ));
        assert!(matches!(
            first_run(&s, "https://h/admin".into(), now).await.unwrap(),
            FirstRun::PasswordSet
        ));
    }
}
