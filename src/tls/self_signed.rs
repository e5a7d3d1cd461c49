//! Self-signed certificates (ECDSA P-256, rcgen): the one generated on first start and
//! kept in `data_dir/tls` for a quick start, and the temporary one ACME mode serves
//! from memory until the CA has issued a certificate.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, Context, Result};
use rustls::sign::CertifiedKey;

use super::files::{certified_key, write_private};

/// Paths of the generated certificate in the data directory.
pub(crate) fn paths(data_dir: &Path) -> (PathBuf, PathBuf) {
    let dir = data_dir.join("tls");
    (dir.join("cert.pem"), dir.join("key.pem"))
}

/// A new self-signed certificate for `names` (DNS names or IP addresses) valid for
/// `days`, as (certificate PEM, private key PEM).
fn generate(names: Vec<String>, common_name: &str, days: i64) -> Result<(String, String)> {
    let mut params =
        rcgen::CertificateParams::new(names).map_err(|e| anyhow!("certificate parameters: {e}"))?;
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, common_name);
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::days(1);
    params.not_after = now + time::Duration::days(days);
    let key_pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
        .map_err(|e| anyhow!("generating a key: {e}"))?;
    let certificate = params
        .self_signed(&key_pair)
        .map_err(|e| anyhow!("self-signing: {e}"))?;
    Ok((certificate.pem(), key_pair.serialize_pem()))
}

/// Returns the self-signed certificate of this data directory, generating it on first
/// start (valid for localhost, 127.0.0.1, ::1 and `extra_names`); the flag says
/// whether it was generated now.
pub(crate) fn ensure(data_dir: &Path, extra_names: &[String]) -> Result<(PathBuf, PathBuf, bool)> {
    let (cert, key) = paths(data_dir);
    if cert.exists() && key.exists() {
        return Ok((cert, key, false));
    }
    let dir = data_dir.join("tls");
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let mut names = vec![
        "localhost".to_owned(),
        "127.0.0.1".to_owned(),
        "::1".to_owned(),
    ];
    for n in extra_names {
        if !names.contains(n) {
            names.push(n.clone());
        }
    }
    let (cert_pem, key_pem) = generate(names, "scimbridge self-signed", 825)?;
    write_private(&key, key_pem.as_bytes())?;
    std::fs::write(&cert, cert_pem).with_context(|| format!("cannot write {}", cert.display()))?;
    Ok((cert, key, true))
}

/// A certificate for `names` that lives only in memory: what ACME mode serves until
/// the CA has issued one. Identity providers refuse it; the log says so.
pub(crate) fn temporary(names: &[String]) -> Result<CertifiedKey> {
    let (cert_pem, key_pem) = generate(
        names.to_vec(),
        "scimbridge temporary (waiting for the ACME CA)",
        7,
    )?;
    certified_key(cert_pem.as_bytes(), key_pem.as_bytes())
        .map_err(|e| anyhow!("temporary certificate: {e}"))
}
