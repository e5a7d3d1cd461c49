//! Admin accounts as the admin page, the control socket and the CLI manage them:
//! named accounts (`admin add`, `admin remove`, `admin list`), one-time setup links
//! (logged at first start for the first account, printed by `admin add` and
//! `admin reset-password`), setting a password with a link, checking a name and
//! password at sign-in, and whether a session still belongs to an account's current
//! password. The rules (names, 192-bit codes valid an hour and stored only hashed,
//! PBKDF2 for passwords, a code consumed in the same transaction that sets the
//! password, never removing the last account that can sign in) live here, in
//! `auth::admin` and in `store::admin`. Knows neither HTTP nor the control wire nor redb.

use serde::{Deserialize, Serialize};

use crate::auth::admin as creds;
use crate::clock::Timestamp;
use crate::secret::Secret;
use crate::store::{
    AccountRefusal, AdminAccount, AdminPassword, CodePurpose, SetupCode, SetupRefusal, Store,
    StoreError,
};

/// Longest account name, in characters.
pub(crate) const MAX_NAME_CHARS: usize = 64;
/// The name the setup page offers for the first account (and the account format 3's
/// single password became).
pub(crate) const FIRST_ACCOUNT: &str = "admin";

/// An account name as stored: lower case ASCII letters, digits and `. _ - @`, 1 to
/// `MAX_NAME_CHARS` characters, starting with a letter or digit. Input is trimmed
/// and lower-cased, so `Alice` and `alice` are one account; no spaces, control or
/// look-alike characters can make two accounts read the same in the audit.
pub(crate) fn account_name(raw: &str) -> Result<String, CredentialError> {
    let name = raw.trim().to_ascii_lowercase();
    if super::is_plain_name(&name, MAX_NAME_CHARS) {
        Ok(name)
    } else {
        Err(CredentialError::InvalidName)
    }
}

/// A new one-time setup code, and the link to use it when the server has announced
/// its admin URL.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct SetupLink {
    /// The account the link sets a password for; `None`: the first account, named on
    /// the setup page.
    #[serde(default)]
    pub account: Option<String>,
    /// Crosses the control socket in this field only.
    #[serde(with = "crate::secret::exposed")]
    pub code: Secret,
    /// `https://HOST:PORT/admin/setup?code=…`, when the admin URL is known (it
    /// holds the code, so it is a secret too).
    #[serde(with = "crate::secret::exposed_opt")]
    pub link: Option<Secret>,
    /// When the code stops working.
    pub expires: Timestamp,
    /// Whether `account` has a password now (one that keeps working until the link
    /// is used); `false` for an account `admin add` made whose link was never used:
    /// it cannot sign in until this link is used.
    #[serde(default)]
    pub password_set: bool,
}

/// An account as `admin list` and the page show it: never its password record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct AccountInfo {
    pub name: String,
    pub created: Timestamp,
    /// When its current password was set; `None` while its setup link is unused.
    pub password_set: Option<Timestamp>,
    /// When its pending setup link expires, if one is pending.
    pub link_expires: Option<Timestamp>,
}

/// What a starting server does about the first account.
#[derive(Debug)]
pub(crate) enum FirstRun {
    /// An account can sign in: nothing to do.
    PasswordSet,
    /// A link printed by a command (`admin reset-password`, `admin add`) is still
    /// valid: keep it.
    ResetPending,
    /// A fresh first-account code, to be logged as a setup link.
    Issued(Secret),
}

/// Why a credential operation failed. The messages are the CLI's and the page's.
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
    #[error(
        "an admin account name is 1 to {MAX_NAME_CHARS} letters, digits and . _ - @, \
         starting with a letter or digit"
    )]
    InvalidName,
    #[error("an admin account named \"{0}\" already exists")]
    Exists(String),
    #[error("there is no admin account named \"{0}\"; `scimbridge admin list` shows them")]
    NoSuchAccount(String),
    #[error(
        "\"{0}\" is the only admin account that can sign in; add another first \
         (`scimbridge admin add NAME`) and set its password"
    )]
    LastAccount(String),
    /// `admin reset-password` without a name while several accounts exist.
    #[error(
        "there are several admin accounts ({}); say whose password to reset: \
         `scimbridge admin reset-password NAME`",
        .0.join(", ")
    )]
    NameNeeded(Vec<String>),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<AccountRefusal> for CredentialError {
    fn from(r: AccountRefusal) -> Self {
        match r {
            AccountRefusal::Exists(n) => CredentialError::Exists(n),
            AccountRefusal::NoSuchAccount(n) => CredentialError::NoSuchAccount(n),
            AccountRefusal::LastAccount(n) => CredentialError::LastAccount(n),
            AccountRefusal::Setup(why) => CredentialError::Refused(why),
        }
    }
}

/// Stores a new code for `purpose` and returns the link to print.
async fn new_link(
    store: &Store,
    purpose: CodePurpose,
    from_reset: bool,
    now: Timestamp,
) -> Result<SetupLink, CredentialError> {
    let (code, hash) = creds::new_setup_code().map_err(|_| CredentialError::Random)?;
    let expires = now.saturating_add(creds::SETUP_CODE_LIFETIME);
    let account = match &purpose {
        CodePurpose::NewAccount(n) | CodePurpose::Reset(n) => Some(n.clone()),
        CodePurpose::FirstAccount => None,
    };
    store
        .add_admin_setup_code(purpose, hash, expires, from_reset, now)
        .await??;
    let snap = store.snapshot()?;
    let url = snap.admin_url()?;
    let link = url.map(|u| Secret::new(format!("{u}/setup?code={}", code.expose())));
    let password_set = match &account {
        Some(name) => snap
            .admin_accounts()?
            .iter()
            .any(|a| &a.name == name && a.password.is_some()),
        None => false,
    };
    Ok(SetupLink {
        account,
        code,
        link,
        expires,
        password_set,
    })
}

/// `admin reset-password [NAME]`: a new one-time link for the account, replacing its
/// pending one; its current password, if it has one (`SetupLink::password_set`),
/// keeps working until the link is used. Without
/// a name: the only account, or the first account's link while none exists; refused
/// (naming them) when there are several.
pub(crate) async fn reset_password(
    store: &Store,
    name: Option<String>,
    now: Timestamp,
) -> Result<SetupLink, CredentialError> {
    let purpose = match name {
        Some(n) => CodePurpose::Reset(account_name(&n)?),
        None => {
            let accounts = store.snapshot()?.admin_accounts()?;
            match accounts.as_slice() {
                [] => CodePurpose::FirstAccount,
                [only] => CodePurpose::Reset(only.name.clone()),
                many => {
                    return Err(CredentialError::NameNeeded(
                        many.iter().map(|a| a.name.clone()).collect(),
                    ))
                }
            }
        }
    };
    new_link(store, purpose, true, now).await
}

/// `admin add NAME`: creates the account (without a password) and returns the
/// one-time link that sets its password.
pub(crate) async fn add(
    store: &Store,
    name: &str,
    now: Timestamp,
) -> Result<SetupLink, CredentialError> {
    let name = account_name(name)?;
    new_link(store, CodePurpose::NewAccount(name), true, now).await
}

/// `admin remove NAME`: removes the account and its pending link (its sessions end
/// on their next request); refused for the last account that can sign in.
pub(crate) async fn remove(store: &Store, name: &str) -> Result<AccountInfo, CredentialError> {
    let name = account_name(name)?;
    let gone = store.remove_admin_account(name).await??;
    Ok(info(gone, &[]))
}

fn info(a: AdminAccount, codes: &[SetupCode]) -> AccountInfo {
    AccountInfo {
        link_expires: codes
            .iter()
            .filter(|c| c.account.as_deref() == Some(a.name.as_str()))
            .map(|c| c.expires)
            .max(),
        password_set: a.password.map(|p| p.set_at),
        name: a.name,
        created: a.created,
    }
}

/// `admin list`: every account by name, with when its password was set and its
/// pending link (unexpired ones only).
pub(crate) fn list(store: &Store, now: Timestamp) -> Result<Vec<AccountInfo>, CredentialError> {
    let snapshot = store.snapshot()?;
    let codes: Vec<SetupCode> = snapshot
        .admin_setup_codes()?
        .into_iter()
        .filter(|c| c.expires >= now)
        .collect();
    let accounts = snapshot.admin_accounts()?;
    Ok(accounts.into_iter().map(|a| info(a, &codes)).collect())
}

/// At server start: records the admin URL and, while no account can sign in, issues
/// a first-account code unless one printed by a command is still valid.
pub(crate) async fn first_run(
    store: &Store,
    admin_url: String,
    now: Timestamp,
) -> Result<FirstRun, CredentialError> {
    store.set_admin_url(admin_url).await?;
    let snapshot = store.snapshot()?;
    if snapshot
        .admin_accounts()?
        .iter()
        .any(|a| a.password.is_some())
    {
        return Ok(FirstRun::PasswordSet);
    }
    if snapshot
        .admin_setup_codes()?
        .iter()
        .any(|c| c.from_reset && c.expires > now)
    {
        return Ok(FirstRun::ResetPending);
    }
    drop(snapshot);
    let link = new_link(store, CodePurpose::FirstAccount, false, now).await?;
    Ok(FirstRun::Issued(link.code))
}

/// Whether some account can sign in (a store failure counts as yes: the page then
/// offers sign-in, not setup).
pub(crate) fn password_is_set(store: &Store) -> bool {
    store
        .snapshot()
        .and_then(|s| s.admin_accounts())
        .map(|a| a.iter().any(|a| a.password.is_some()))
        .unwrap_or(true)
}

/// The pending, unexpired setup code `code` (its `account` says whose password it
/// sets; `None`: the first account's).
pub(crate) fn check_setup_code(
    store: &Store,
    code: &str,
    now: Timestamp,
) -> Result<SetupCode, SetupRefusal> {
    if code.is_empty() || code.len() > 200 {
        return Err(SetupRefusal::Unknown);
    }
    store
        .snapshot()
        .and_then(|s| s.admin_setup_code(&creds::setup_code_hash(code), now))
        .unwrap_or(Err(SetupRefusal::Unknown))
}

/// Sets an account's password with a setup code: checks the code, the name (for the
/// first account's code, `chosen_name`; other codes name their account) and the
/// password rules, hashes off the async runtime (PBKDF2, slow on purpose), and
/// stores the password while consuming the code in one transaction. Returns the
/// account's name.
pub(crate) async fn set_password(
    store: &Store,
    code: &str,
    chosen_name: &str,
    password: String,
    confirm: &str,
    now: Timestamp,
) -> Result<String, CredentialError> {
    let pending = check_setup_code(store, code, now).map_err(CredentialError::Refused)?;
    let chosen = match pending.account {
        Some(name) => name,
        None => account_name(chosen_name)?,
    };
    if let Some(problem) = creds::password_problem(&password, confirm) {
        return Err(CredentialError::WeakPassword(problem));
    }
    let record = tokio::task::spawn_blocking(move || {
        creds::hash_password(&password, now, creds::PBKDF2_ITERATIONS)
    })
    .await
    .map_err(|_| CredentialError::Hashing)?
    .map_err(|_| CredentialError::Random)?;
    Ok(store
        .complete_admin_setup(creds::setup_code_hash(code), chosen, now, record)
        .await??)
}

/// An account signed in with its current password: what a session is bound to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Credential {
    pub account: String,
    /// The salt of the password it signed in with: a new password (a new salt) or
    /// a removed account ends the session (`still_current`).
    pub password_salt: String,
}

/// Checks a name and password at sign-in; `None` when either is wrong. An unknown
/// name costs the same PBKDF2 work as a wrong password, so the answer's timing does
/// not tell which accounts exist. Hashing runs off the async runtime.
pub(crate) async fn verify_password(
    store: &Store,
    name: &str,
    password: String,
) -> Result<Option<Credential>, StoreError> {
    let account = match account_name(name) {
        Ok(n) => store.snapshot()?.admin_account(&n)?,
        Err(_) => None,
    };
    let record = account.as_ref().and_then(|a| a.password.clone());
    let known = record.is_some();
    let record = record.unwrap_or_else(|| AdminPassword {
        salt: "00".repeat(16),
        iterations: creds::PBKDF2_ITERATIONS,
        hash: "00".repeat(32),
        set_at: Timestamp::from(time::OffsetDateTime::UNIX_EPOCH),
    });
    let salt = record.salt.clone();
    let ok = tokio::task::spawn_blocking(move || creds::verify_password(&record, &password))
        .await
        .unwrap_or(false);
    Ok(match (ok && known, account) {
        (true, Some(a)) => Some(Credential {
            account: a.name,
            password_salt: salt,
        }),
        _ => None,
    })
}

/// Whether `c` is still the account's current password (the account exists and its
/// password was not set again since). A store failure counts as no.
pub(crate) fn still_current(store: &Store, c: &Credential) -> bool {
    store
        .snapshot()
        .and_then(|s| s.admin_account(&c.account))
        .ok()
        .flatten()
        .and_then(|a| a.password)
        .is_some_and(|p| p.salt == c.password_salt)
}

#[cfg(test)]
mod tests {
    use super::*;

    const PW: &str = "correct horse battery";

    fn store() -> (tempfile::TempDir, Store) {
        let d = tempfile::tempdir().unwrap();
        let s = Store::open(&d.path().join("db"), &Default::default()).unwrap();
        (d, s)
    }

    #[test]
    fn account_names_are_short_plain_and_caseless() {
        assert_eq!(
            account_name("  Alice@Example.com ").unwrap(),
            "alice@example.com"
        );
        assert_eq!(account_name("ops_2").unwrap(), "ops_2");
        for bad in [
            "",
            "  ",
            "a b",
            "-x",
            ".x",
            "a\u{7}",
            "é",
            "a\tb",
            &"x".repeat(65),
        ] {
            assert!(account_name(bad).is_err(), "{bad:?}");
        }
    }

    #[tokio::test]
    async fn a_reset_code_survives_a_restart_and_sets_the_password_once() {
        let (_d, s) = store();
        let now = Timestamp::now();
        let FirstRun::Issued(first) = first_run(&s, "https://h/admin".into(), now).await.unwrap()
        else {
            panic!("no account yet: a code is issued");
        };
        // No account yet: the reset is the first account's link too.
        let reset = reset_password(&s, None, now).await.unwrap();
        assert_eq!(reset.account, None);
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
        let weak = set_password(&s, code, "admin", "short".into(), "short", now).await;
        assert!(matches!(weak, Err(CredentialError::WeakPassword(_))));
        let bad_name = set_password(&s, code, "a b", PW.into(), PW, now).await;
        assert!(matches!(bad_name, Err(CredentialError::InvalidName)));
        let name = set_password(&s, code, "Root", PW.into(), PW, now)
            .await
            .unwrap();
        assert_eq!(name, "root");
        assert!(password_is_set(&s));
        let c = verify_password(&s, "ROOT", PW.into())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(c.account, "root");
        assert!(still_current(&s, &c));
        assert!(verify_password(&s, "root", "wrong".into())
            .await
            .unwrap()
            .is_none());
        assert!(verify_password(&s, "nobody", PW.into())
            .await
            .unwrap()
            .is_none());
        let again = set_password(&s, code, "root", PW.into(), PW, now).await;
        assert!(matches!(
            again,
            Err(CredentialError::Refused(SetupRefusal::Unknown))
        ));
        assert!(matches!(
            first_run(&s, "https://h/admin".into(), now).await.unwrap(),
            FirstRun::PasswordSet
        ));
    }

    #[tokio::test]
    async fn accounts_are_added_reset_and_removed_by_name() {
        let (_d, s) = store();
        let now = Timestamp::now();
        let first = reset_password(&s, None, now).await.unwrap();
        set_password(&s, first.code.expose(), "admin", PW.into(), PW, now)
            .await
            .unwrap();
        let admin = verify_password(&s, "admin", PW.into())
            .await
            .unwrap()
            .unwrap();
        // The only account: reset-password without a name means it.
        let r = reset_password(&s, None, now).await.unwrap();
        assert_eq!(r.account.as_deref(), Some("admin"));
        let bob = add(&s, "Bob", now).await.unwrap();
        assert_eq!(bob.account.as_deref(), Some("bob"));
        assert!(matches!(
            add(&s, "bob", now).await,
            Err(CredentialError::Exists(_))
        ));
        let listed = list(&s, now).unwrap();
        assert_eq!(
            listed
                .iter()
                .map(|a| (
                    a.name.as_str(),
                    a.password_set.is_some(),
                    a.link_expires.is_some()
                ))
                .collect::<Vec<_>>(),
            [("admin", true, true), ("bob", false, true)]
        );
        // Two accounts: the name is needed.
        let e = reset_password(&s, None, now).await.unwrap_err();
        assert!(e.to_string().contains("admin, bob"), "{e}");
        assert!(matches!(
            reset_password(&s, Some("carol".into()), now).await,
            Err(CredentialError::NoSuchAccount(_))
        ));
        // Bob's link sets bob's password, whatever name the form sends.
        let name = set_password(
            &s,
            bob.code.expose(),
            "admin",
            "bob's own long pass".into(),
            "bob's own long pass",
            now,
        )
        .await
        .unwrap();
        assert_eq!(name, "bob");
        assert!(
            still_current(&s, &admin),
            "another account's password leaves admin's sessions"
        );
        // admin's reset link, used: admin's old sessions end.
        set_password(
            &s,
            r.code.expose(),
            "",
            "a new admin pass phrase".into(),
            "a new admin pass phrase",
            now,
        )
        .await
        .unwrap();
        assert!(!still_current(&s, &admin));
        assert!(verify_password(&s, "admin", PW.into())
            .await
            .unwrap()
            .is_none());
        let bob_in = verify_password(&s, "bob", "bob's own long pass".into())
            .await
            .unwrap()
            .unwrap();
        remove(&s, "admin").await.unwrap();
        assert!(matches!(
            remove(&s, "bob").await,
            Err(CredentialError::LastAccount(_))
        ));
        assert!(matches!(
            remove(&s, "admin").await,
            Err(CredentialError::NoSuchAccount(_))
        ));
        assert!(still_current(&s, &bob_in));
        // A pending account (no password yet) may go; its link goes with it.
        let carol = add(&s, "carol", now).await.unwrap();
        remove(&s, "carol").await.unwrap();
        assert_eq!(
            check_setup_code(&s, carol.code.expose(), now),
            Err(SetupRefusal::Unknown)
        );
    }
}
