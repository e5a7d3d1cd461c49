//! What ACME mode keeps in `data_dir/acme` (directory 0700, files 0600, each written
//! atomically), so that a restart serves at once and orders nothing:
//! - `account.json`: the account key and URL, with the directory URL they belong to;
//! - `certificate.pem`: the issued chain followed by its private key (one file, so the
//!   two are always replaced together);
//! - `certificate.json`: the directory URL that issued it, so that moving from the
//!   staging to the production directory orders a trusted certificate.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use instant_acme::AccountCredentials;
use rustls::sign::CertifiedKey;
use serde::{Deserialize, Serialize};

use crate::tls::files::{certified_key, write_private};

pub(crate) struct Storage {
    dir: PathBuf,
}

#[derive(Serialize, Deserialize)]
struct StoredAccount {
    directory: String,
    credentials: AccountCredentials,
}

#[derive(Serialize, Deserialize)]
struct CertificateMeta {
    directory: String,
}

impl Storage {
    pub(crate) fn new(data_dir: &Path) -> Storage {
        Storage {
            dir: data_dir.join("acme"),
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    fn ensure_dir(&self) -> Result<()> {
        std::fs::create_dir_all(&self.dir)
            .with_context(|| format!("cannot create {}", self.dir.display()))?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let _ = std::fs::set_permissions(&self.dir, std::fs::Permissions::from_mode(0o700));
        }
        Ok(())
    }

    /// The account registered with `directory`, if one is stored for it.
    pub(crate) fn account(&self, directory: &str) -> Result<Option<AccountCredentials>> {
        let path = self.path("account.json");
        let text = match std::fs::read(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
        };
        let stored: StoredAccount = serde_json::from_slice(&text).with_context(|| {
            format!(
                "{} is damaged; remove it to register a new ACME account",
                path.display()
            )
        })?;
        Ok((stored.directory == directory).then_some(stored.credentials))
    }

    pub(crate) fn save_account(
        &self,
        directory: &str,
        credentials: AccountCredentials,
    ) -> Result<()> {
        self.ensure_dir()?;
        let stored = StoredAccount {
            directory: directory.to_owned(),
            credentials,
        };
        write_private(
            &self.path("account.json"),
            &serde_json::to_vec_pretty(&stored)?,
        )
    }

    /// Forgets the account (the CA no longer knows it); the next order registers anew.
    pub(crate) fn forget_account(&self) {
        let _ = std::fs::remove_file(self.path("account.json"));
    }

    /// The stored certificate, if there is a usable one. A damaged file is logged and
    /// treated as none: a new certificate is ordered.
    pub(crate) fn certificate(&self) -> Option<CertifiedKey> {
        let path = self.path("certificate.pem");
        let pem = std::fs::read(&path).ok()?;
        match certified_key(&pem, &pem) {
            Ok(key) => Some(key),
            Err(e) => {
                tracing::warn!(file = %path.display(), error = %e, "the stored ACME certificate is unusable; ordering a new one");
                None
            }
        }
    }

    /// The directory that issued the stored certificate; `None` when its note is missing.
    pub(crate) fn certificate_directory(&self) -> Option<String> {
        let text = std::fs::read(self.path("certificate.json")).ok()?;
        serde_json::from_slice::<CertificateMeta>(&text)
            .ok()
            .map(|m| m.directory)
    }

    pub(crate) fn save_certificate(
        &self,
        chain_pem: &str,
        key_pem: &str,
        directory: &str,
    ) -> Result<()> {
        self.ensure_dir()?;
        let mut pem = String::with_capacity(chain_pem.len() + key_pem.len() + 1);
        pem.push_str(chain_pem.trim_end());
        pem.push('\n');
        pem.push_str(key_pem);
        write_private(&self.path("certificate.pem"), pem.as_bytes())?;
        let meta = CertificateMeta {
            directory: directory.to_owned(),
        };
        write_private(&self.path("certificate.json"), &serde_json::to_vec(&meta)?)
    }
}
