//! Admin accounts as stored: one row per account name in `admin_accounts` (its
//! PBKDF2 password record, or none while its setup link is unused), and the pending
//! one-time setup codes in `admin_setup_codes` (only the SHA-256 of each code, with
//! the account it is for and its expiry). Hashing passwords, generating codes and
//! the rules for names are the auth and application layers' jobs; this file keeps
//! the records and makes each change that must be atomic one transaction: a code is
//! consumed with the password it sets, an account leaves with its codes, and the
//! last account that can sign in is never removed.

use redb::{ReadableTable, TableDefinition, WriteTransaction};
use serde::{Deserialize, Serialize};

use super::{Snapshot, Store, StoreResult, SETTINGS};
use crate::clock::Timestamp;

/// account name (lower case, `app::admin::account_name`) → JSON `AdminAccount`.
pub(super) const ACCOUNTS: TableDefinition<&str, &[u8]> = TableDefinition::new("admin_accounts");
/// hex SHA-256 of a pending setup code → JSON `SetupCode`.
pub(super) const SETUP_CODES: TableDefinition<&str, &[u8]> =
    TableDefinition::new("admin_setup_codes");

const URL_KEY: &str = "admin_url";

/// An account's password as stored: never the password itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct AdminPassword {
    /// Hex of the random salt (fresh for every password set, so it also tells one
    /// password of an account from the next: sessions are bound to it).
    pub salt: String,
    pub iterations: u32,
    /// Hex of the PBKDF2-HMAC-SHA256 output.
    pub hash: String,
    /// When it was set.
    pub set_at: Timestamp,
}

/// A named admin account (format 4; format 3's single password became "admin").
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct AdminAccount {
    pub name: String,
    pub created: Timestamp,
    /// `None` until the account's setup link is used (`admin add` made it).
    pub password: Option<AdminPassword>,
}

/// A pending setup code: whoever holds it may set the password of `account`, once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct SetupCode {
    /// The account the code sets a password for; `None`: the first account, named
    /// on the setup page (the code logged at first start, or `admin reset-password`
    /// while no account exists).
    pub account: Option<String>,
    /// The code is refused after this instant (stored as Unix milliseconds).
    #[serde(rename = "expires_ms", with = "crate::clock::unix_ms")]
    pub expires: Timestamp,
    /// Issued by a command (`admin add`, `admin reset-password`) rather than logged
    /// at start: a restart must not replace a code that was printed to an admin.
    #[serde(default)]
    pub from_reset: bool,
}

/// What a new setup code is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum CodePurpose {
    /// The first account, named on the setup page.
    FirstAccount,
    /// A new account (`admin add`): created now, without a password.
    NewAccount(String),
    /// A new password for an existing account (`admin reset-password`).
    Reset(String),
}

/// Why a setup code was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SetupRefusal {
    /// No such pending code (used and replaced codes are deleted).
    Unknown,
    Expired,
}

/// Why an account change was refused (the store's part of the rules).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum AccountRefusal {
    /// An account with this name already exists (with a password, for the first
    /// account's setup page).
    Exists(String),
    NoSuchAccount(String),
    /// Removing it would leave no account that can sign in.
    LastAccount(String),
    Setup(SetupRefusal),
}

fn get_json<T: serde::de::DeserializeOwned>(
    t: &impl ReadableTable<&'static str, &'static [u8]>,
    key: &str,
) -> StoreResult<Option<T>> {
    match t.get(key)? {
        Some(v) => Ok(Some(serde_json::from_slice(v.value())?)),
        None => Ok(None),
    }
}

fn all_json<T: serde::de::DeserializeOwned>(
    t: &impl ReadableTable<&'static str, &'static [u8]>,
) -> StoreResult<Vec<(String, T)>> {
    let mut out = Vec::new();
    for row in t.iter()? {
        let (k, v) = row?;
        out.push((k.value().to_owned(), serde_json::from_slice(v.value())?));
    }
    Ok(out)
}

/// A pending code by its hash, refused when expired.
fn pending_code(
    t: &impl ReadableTable<&'static str, &'static [u8]>,
    code_hash: &str,
    now: Timestamp,
) -> StoreResult<Result<SetupCode, SetupRefusal>> {
    Ok(match get_json::<SetupCode>(t, code_hash)? {
        None => Err(SetupRefusal::Unknown),
        Some(c) if now > c.expires => Err(SetupRefusal::Expired),
        Some(c) => Ok(c),
    })
}

impl Snapshot {
    /// Every account, by name.
    pub(crate) fn admin_accounts(&self) -> StoreResult<Vec<AdminAccount>> {
        let rows = all_json(&self.txn().open_table(ACCOUNTS)?)?;
        Ok(rows.into_iter().map(|(_, a)| a).collect())
    }

    pub(crate) fn admin_account(&self, name: &str) -> StoreResult<Option<AdminAccount>> {
        get_json(&self.txn().open_table(ACCOUNTS)?, name)
    }

    /// Every pending setup code (expired ones too, until the next code replaces them).
    pub(crate) fn admin_setup_codes(&self) -> StoreResult<Vec<SetupCode>> {
        let rows = all_json(&self.txn().open_table(SETUP_CODES)?)?;
        Ok(rows.into_iter().map(|(_, c)| c).collect())
    }

    /// The pending, unexpired setup code with this hex SHA-256.
    pub(crate) fn admin_setup_code(
        &self,
        code_hash: &str,
        now: Timestamp,
    ) -> StoreResult<Result<SetupCode, SetupRefusal>> {
        pending_code(&self.txn().open_table(SETUP_CODES)?, code_hash, now)
    }

    /// The admin page's base URL as the running server announced it (for the link
    /// that `admin add` and `admin reset-password` print).
    pub(crate) fn admin_url(&self) -> StoreResult<Option<String>> {
        let t = self.txn().open_table(SETTINGS)?;
        let r = t
            .get(URL_KEY)?
            .map(|v| String::from_utf8_lossy(v.value()).into_owned());
        Ok(r)
    }
}

/// Stores `code` under `code_hash`, dropping the expired codes and any other code for
/// the same account (the newest link is the one that works).
fn put_code(
    txn: &WriteTransaction,
    code_hash: &str,
    code: &SetupCode,
    now: Timestamp,
) -> StoreResult<()> {
    let mut t = txn.open_table(SETUP_CODES)?;
    for (hash, old) in all_json::<SetupCode>(&t)? {
        if old.account == code.account || old.expires < now {
            t.remove(hash.as_str())?;
        }
    }
    t.insert(code_hash, serde_json::to_vec(code)?.as_slice())?;
    Ok(())
}

fn put_account(txn: &WriteTransaction, a: &AdminAccount) -> StoreResult<()> {
    txn.open_table(ACCOUNTS)?
        .insert(a.name.as_str(), serde_json::to_vec(a)?.as_slice())?;
    Ok(())
}

impl Store {
    /// Stores a new setup code for `purpose`, replacing the account's pending one; a
    /// `NewAccount` is created (without a password) in the same transaction.
    pub(crate) async fn add_admin_setup_code(
        &self,
        purpose: CodePurpose,
        code_hash: String,
        expires: Timestamp,
        from_reset: bool,
        now: Timestamp,
    ) -> StoreResult<Result<(), AccountRefusal>> {
        self.write(move |txn| {
            let code = SetupCode {
                account: match &purpose {
                    CodePurpose::NewAccount(n) | CodePurpose::Reset(n) => Some(n.clone()),
                    CodePurpose::FirstAccount => None,
                },
                expires,
                from_reset,
            };
            let existing = match &purpose {
                CodePurpose::NewAccount(n) | CodePurpose::Reset(n) => {
                    get_json::<AdminAccount>(&txn.open_table(ACCOUNTS)?, n)?
                }
                CodePurpose::FirstAccount => None,
            };
            match (&purpose, existing) {
                (CodePurpose::NewAccount(name), Some(_)) => {
                    return Ok(Err(AccountRefusal::Exists(name.clone())))
                }
                (CodePurpose::NewAccount(name), None) => put_account(
                    txn,
                    &AdminAccount {
                        name: name.clone(),
                        created: now,
                        password: None,
                    },
                )?,
                (CodePurpose::Reset(name), None) => {
                    return Ok(Err(AccountRefusal::NoSuchAccount(name.clone())))
                }
                (CodePurpose::Reset(_) | CodePurpose::FirstAccount, _) => {}
            }
            put_code(txn, &code_hash, &code, now)?;
            Ok(Ok(()))
        })
        .await
    }

    pub(crate) async fn set_admin_url(&self, url: String) -> StoreResult<()> {
        self.write(move |txn| {
            txn.open_table(SETTINGS)?.insert(URL_KEY, url.as_bytes())?;
            Ok(())
        })
        .await
    }

    /// Consumes the setup code and stores the password of its account in one
    /// transaction, so a code sets a password at most once. A first-account code
    /// creates `chosen_name` (refused when that account already has a password).
    /// Returns the account's name.
    pub(crate) async fn complete_admin_setup(
        &self,
        code_hash: String,
        chosen_name: String,
        now: Timestamp,
        password: AdminPassword,
    ) -> StoreResult<Result<String, AccountRefusal>> {
        self.write(move |txn| {
            let code = match pending_code(&txn.open_table(SETUP_CODES)?, &code_hash, now)? {
                Ok(c) => c,
                Err(why) => return Ok(Err(AccountRefusal::Setup(why))),
            };
            let first = code.account.is_none();
            let name = code.account.unwrap_or(chosen_name);
            let account = match get_json::<AdminAccount>(&txn.open_table(ACCOUNTS)?, &name)? {
                Some(a) if first && a.password.is_some() => {
                    return Ok(Err(AccountRefusal::Exists(name)))
                }
                Some(a) => a,
                None if first => AdminAccount {
                    name: name.clone(),
                    created: now,
                    password: None,
                },
                // Removed after its link was printed.
                None => return Ok(Err(AccountRefusal::NoSuchAccount(name))),
            };
            txn.open_table(SETUP_CODES)?.remove(code_hash.as_str())?;
            put_account(
                txn,
                &AdminAccount {
                    password: Some(password),
                    ..account
                },
            )?;
            Ok(Ok(name))
        })
        .await
    }

    /// Removes an account and its pending codes; refused when it is the last
    /// account that can sign in.
    pub(crate) async fn remove_admin_account(
        &self,
        name: String,
    ) -> StoreResult<Result<AdminAccount, AccountRefusal>> {
        self.write(move |txn| {
            let accounts: Vec<AdminAccount> = all_json(&txn.open_table(ACCOUNTS)?)?
                .into_iter()
                .map(|(_, a)| a)
                .collect();
            let Some(gone) = accounts.iter().find(|a| a.name == name).cloned() else {
                return Ok(Err(AccountRefusal::NoSuchAccount(name)));
            };
            let others_sign_in = accounts
                .iter()
                .any(|a| a.name != name && a.password.is_some());
            if gone.password.is_some() && !others_sign_in {
                return Ok(Err(AccountRefusal::LastAccount(name)));
            }
            txn.open_table(ACCOUNTS)?.remove(name.as_str())?;
            let mut codes = txn.open_table(SETUP_CODES)?;
            for (hash, c) in all_json::<SetupCode>(&codes)? {
                if c.account.as_deref() == Some(name.as_str()) {
                    codes.remove(hash.as_str())?;
                }
            }
            Ok(Ok(gone))
        })
        .await
    }
}

/// Format 3 → 4: the single admin password (`settings.admin_password`) becomes the
/// account "admin"; the pending setup code (`settings.admin_setup`) moves to
/// `admin_setup_codes`, for "admin" when a password was set (it was a reset) or for
/// the first account otherwise.
pub(super) fn upgrade_single_password(txn: &WriteTransaction, now: Timestamp) -> StoreResult<()> {
    /// Format 3's pending code: its hash was in the value.
    #[derive(Deserialize)]
    struct OldCode {
        hash: String,
        #[serde(rename = "expires_ms", with = "crate::clock::unix_ms")]
        expires: Timestamp,
        #[serde(default)]
        from_reset: bool,
    }
    let mut settings = txn.open_table(SETTINGS)?;
    let password: Option<AdminPassword> = get_json(&settings, "admin_password")?;
    let code: Option<OldCode> = get_json(&settings, "admin_setup")?;
    settings.remove("admin_password")?;
    settings.remove("admin_setup")?;
    drop(settings);
    let had_password = password.is_some();
    if let Some(p) = password {
        put_account(
            txn,
            &AdminAccount {
                name: "admin".into(),
                created: p.set_at.min(now),
                password: Some(p),
            },
        )?;
    }
    if let Some(c) = code {
        let code = SetupCode {
            account: had_password.then(|| "admin".to_owned()),
            expires: c.expires,
            from_reset: c.from_reset,
        };
        txn.open_table(SETUP_CODES)?
            .insert(c.hash.as_str(), serde_json::to_vec(&code)?.as_slice())?;
    }
    Ok(())
}
