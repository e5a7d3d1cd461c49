//! Admin-page credentials as kept in `settings`: the password record (PBKDF2 output,
//! salt, iteration count) and the pending one-time setup code (only its SHA-256 and
//! expiry). Hashing passwords and generating codes is the auth layer's job; this file
//! stores records and consumes a setup code atomically with setting the password.

use redb::ReadableTable;
use serde::{Deserialize, Serialize};

use super::{Snapshot, Store, StoreResult, SETTINGS};
use crate::clock::Timestamp;

const PASSWORD_KEY: &str = "admin_password";
const SETUP_KEY: &str = "admin_setup";
const URL_KEY: &str = "admin_url";

/// The admin password as stored: never the password itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct AdminPassword {
    /// Hex of the random salt.
    pub salt: String,
    pub iterations: u32,
    /// Hex of the PBKDF2-HMAC-SHA256 output.
    pub hash: String,
    /// When it was set.
    pub set_at: Timestamp,
}

/// A pending setup code: it lets whoever holds it set a new admin password, once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct SetupCode {
    /// Hex SHA-256 of the code.
    pub hash: String,
    /// The code is refused after this instant (stored as Unix milliseconds).
    #[serde(rename = "expires_ms", with = "crate::clock::unix_ms")]
    pub expires: Timestamp,
    /// Issued by `admin reset-password` rather than logged at start: a restart must
    /// not replace a code that was printed to an admin.
    #[serde(default)]
    pub from_reset: bool,
}

/// Why a setup code was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SetupRefusal {
    /// No code is pending, or the code differs (used codes are deleted).
    Unknown,
    Expired,
}

fn hashes_equal(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

fn check_code(
    pending: Option<SetupCode>,
    code_hash: &str,
    now: Timestamp,
) -> Result<SetupCode, SetupRefusal> {
    match pending {
        Some(c) if hashes_equal(&c.hash, code_hash) => {
            if now > c.expires {
                Err(SetupRefusal::Expired)
            } else {
                Ok(c)
            }
        }
        _ => Err(SetupRefusal::Unknown),
    }
}

impl Snapshot {
    pub(crate) fn admin_password(&self) -> StoreResult<Option<AdminPassword>> {
        let t = self.txn().open_table(SETTINGS)?;
        let r = match t.get(PASSWORD_KEY)? {
            Some(v) => Some(serde_json::from_slice(v.value())?),
            None => None,
        };
        Ok(r)
    }

    pub(crate) fn admin_setup_code(&self) -> StoreResult<Option<SetupCode>> {
        let t = self.txn().open_table(SETTINGS)?;
        let r = match t.get(SETUP_KEY)? {
            Some(v) => Some(serde_json::from_slice(v.value())?),
            None => None,
        };
        Ok(r)
    }

    /// Whether `code_hash` (hex SHA-256) is the pending, unexpired setup code.
    pub(crate) fn check_admin_setup_code(
        &self,
        code_hash: &str,
        now: Timestamp,
    ) -> StoreResult<Result<(), SetupRefusal>> {
        Ok(check_code(self.admin_setup_code()?, code_hash, now).map(|_| ()))
    }

    /// The admin page's base URL as the running server announced it (for the link
    /// that `admin reset-password` prints).
    pub(crate) fn admin_url(&self) -> StoreResult<Option<String>> {
        let t = self.txn().open_table(SETTINGS)?;
        let r = t
            .get(URL_KEY)?
            .map(|v| String::from_utf8_lossy(v.value()).into_owned());
        Ok(r)
    }
}

impl Store {
    /// Replaces any pending setup code with this one.
    pub(crate) async fn set_admin_setup_code(&self, code: SetupCode) -> StoreResult<()> {
        self.write(move |txn| {
            txn.open_table(SETTINGS)?
                .insert(SETUP_KEY, serde_json::to_vec(&code)?.as_slice())?;
            Ok(())
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

    /// Consumes the setup code and stores the new password in one transaction, so a
    /// code sets a password at most once.
    pub(crate) async fn complete_admin_setup(
        &self,
        code_hash: String,
        now: Timestamp,
        password: AdminPassword,
    ) -> StoreResult<Result<(), SetupRefusal>> {
        self.write(move |txn| {
            let mut t = txn.open_table(SETTINGS)?;
            let pending: Option<SetupCode> = match t.get(SETUP_KEY)?.map(|v| v.value().to_vec()) {
                Some(bytes) => Some(serde_json::from_slice(&bytes)?),
                None => None,
            };
            if let Err(why) = check_code(pending, &code_hash, now) {
                return Ok(Err(why));
            }
            t.remove(SETUP_KEY)?;
            t.insert(PASSWORD_KEY, serde_json::to_vec(&password)?.as_slice())?;
            Ok(Ok(()))
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code(hash: &str, expires_ms: i64) -> Option<SetupCode> {
        Some(SetupCode {
            hash: hash.into(),
            expires: ms(expires_ms),
            from_reset: false,
        })
    }

    fn ms(ms: i64) -> Timestamp {
        Timestamp::from_unix_ms(ms).unwrap()
    }

    #[test]
    fn setup_code_must_match_and_be_unexpired() {
        assert!(check_code(code("ab", 10), "ab", ms(10)).is_ok());
        assert_eq!(
            check_code(code("ab", 10), "ab", ms(11)).unwrap_err(),
            SetupRefusal::Expired
        );
        assert_eq!(
            check_code(code("ab", 10), "ac", ms(5)).unwrap_err(),
            SetupRefusal::Unknown
        );
        assert_eq!(
            check_code(code("ab", 10), "abc", ms(5)).unwrap_err(),
            SetupRefusal::Unknown
        );
        assert_eq!(
            check_code(None, "ab", ms(5)).unwrap_err(),
            SetupRefusal::Unknown
        );
    }
}
