//! Certificate and key files: loading a PEM chain and key with every fatal fault named
//! in one sentence (`FileFault`), writing private files (0600, atomically), and the
//! reloader of `--tls files` (SIGHUP or a changed file; a certificate that does not
//! load is refused and the previous one keeps serving).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result};
use rustls::crypto::ring as provider;
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use super::{CertSource, CertStore, Served};

/// A certificate/key pair that cannot be served: the server refuses to start with it,
/// and a reload that meets it keeps the previous certificate.
#[derive(Debug, thiserror::Error)]
pub(crate) enum FileFault {
    #[error("cannot read the certificate file {}: {reason}; check tls.cert / --tls-cert", path.display())]
    CertUnreadable { path: PathBuf, reason: String },
    #[error(
        "{} is not a PEM certificate chain ({reason}); it should hold -----BEGIN CERTIFICATE----- blocks, \
         the server's certificate first", path.display()
    )]
    CertNotPem { path: PathBuf, reason: String },
    #[error(
        "{} holds no PEM certificate (expected -----BEGIN CERTIFICATE-----; a DER file can be converted \
         with `openssl x509 -inform der`)", path.display()
    )]
    NoCertificate { path: PathBuf },
    #[error("the first certificate in {} is not a valid X.509 certificate: {reason}", path.display())]
    CertNotX509 { path: PathBuf, reason: String },
    #[error("cannot read the private key file {}: {reason}; check tls.key / --tls-key", path.display())]
    KeyUnreadable { path: PathBuf, reason: String },
    #[error(
        "{} holds no PEM private key (expected -----BEGIN PRIVATE KEY-----, \
         -----BEGIN EC PRIVATE KEY----- or -----BEGIN RSA PRIVATE KEY-----)", path.display()
    )]
    NoKey { path: PathBuf },
    #[error(
        "the private key in {} is not usable (ECDSA P-256/P-384, Ed25519 or RSA are): {reason}",
        path.display()
    )]
    KeyUnusable { path: PathBuf, reason: String },
    #[error(
        "the private key {} does not belong to the certificate {}: give the key the certificate was issued for",
        key.display(), cert.display()
    )]
    KeyMismatch { cert: PathBuf, key: PathBuf },
}

fn io_reason(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::NotFound => "no such file".into(),
        std::io::ErrorKind::PermissionDenied => {
            "permission denied (the service user must be able to read it)".into()
        }
        _ => e.to_string(),
    }
}

/// Reads a PEM certificate chain (server certificate first) and its private key.
pub(crate) fn load_pem(cert: &Path, key: &Path) -> Result<CertifiedKey, FileFault> {
    let cert_pem = std::fs::read(cert).map_err(|e| FileFault::CertUnreadable {
        path: cert.to_owned(),
        reason: io_reason(&e),
    })?;
    let key_pem = std::fs::read(key).map_err(|e| FileFault::KeyUnreadable {
        path: key.to_owned(),
        reason: io_reason(&e),
    })?;
    certified_key(&cert_pem, &key_pem).map_err(|f| f.at(cert, key))
}

/// A fault found in PEM text, before it is known which files the text came from.
#[derive(Debug)]
pub(crate) enum PemFault {
    CertNotPem(String),
    NoCertificate,
    CertNotX509(String),
    NoKey,
    KeyUnusable(String),
    KeyMismatch,
}

impl PemFault {
    fn at(self, cert: &Path, key: &Path) -> FileFault {
        let (cert, key) = (cert.to_owned(), key.to_owned());
        match self {
            PemFault::CertNotPem(reason) => FileFault::CertNotPem { path: cert, reason },
            PemFault::NoCertificate => FileFault::NoCertificate { path: cert },
            PemFault::CertNotX509(reason) => FileFault::CertNotX509 { path: cert, reason },
            PemFault::NoKey => FileFault::NoKey { path: key },
            PemFault::KeyUnusable(reason) => FileFault::KeyUnusable { path: key, reason },
            PemFault::KeyMismatch => FileFault::KeyMismatch { cert, key },
        }
    }
}

impl std::fmt::Display for PemFault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PemFault::CertNotPem(r) => write!(f, "not a PEM certificate chain: {r}"),
            PemFault::NoCertificate => f.write_str("no certificate"),
            PemFault::CertNotX509(r) => write!(f, "not an X.509 certificate: {r}"),
            PemFault::NoKey => f.write_str("no private key"),
            PemFault::KeyUnusable(r) => write!(f, "the key is not usable: {r}"),
            PemFault::KeyMismatch => f.write_str("the key does not belong to the certificate"),
        }
    }
}

/// Builds a servable certificate from PEM text: the chain (server certificate first)
/// and a private key, which must belong to the certificate.
pub(crate) fn certified_key(cert_pem: &[u8], key_pem: &[u8]) -> Result<CertifiedKey, PemFault> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| PemFault::CertNotPem(e.to_string()))?;
    let Some(leaf) = chain.first() else {
        return Err(PemFault::NoCertificate);
    };
    if let Err(e) = x509_parser::parse_x509_certificate(leaf) {
        return Err(PemFault::CertNotX509(e.to_string()));
    }
    let key_der = match PrivateKeyDer::from_pem_slice(key_pem) {
        Ok(k) => k,
        Err(_) => return Err(PemFault::NoKey),
    };
    let signing = provider::sign::any_supported_type(&key_der)
        .map_err(|e| PemFault::KeyUnusable(e.to_string()))?;
    let ck = CertifiedKey::new(chain, signing);
    match ck.keys_match() {
        Ok(()) => Ok(ck),
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch)) => {
            Err(PemFault::KeyMismatch)
        }
        // The key cannot tell its public half (`Unknown`): nothing to compare; the
        // first handshake would show a mismatch.
        Err(rustls::Error::InconsistentKeys(_)) => Ok(ck),
        Err(e) => Err(PemFault::CertNotX509(e.to_string())),
    }
}

/// Writes `bytes` to `path` readable by its owner only (0600), atomically: a reader
/// sees the old file or the new one, never a part.
pub(crate) fn write_private(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    let tmp = path.with_extension("tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts
        .open(&tmp)
        .with_context(|| format!("cannot create {}", tmp.display()))?;
    f.write_all(bytes)
        .and_then(|()| f.sync_all())
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot replace {}", path.display()))?;
    if let Some(dir) = path.parent() {
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
    }
    Ok(())
}

fn modified(path: &Path) -> Option<std::time::SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

/// Reloads the certificate on SIGHUP and when either file changes (checked every few
/// seconds). A certificate that does not load keeps the old one serving, and the
/// log says why. Established connections are unaffected: only new handshakes see
/// the new certificate.
pub(crate) async fn watch(certs: Arc<CertStore>, source: CertSource, cert: PathBuf, key: PathBuf) {
    use tokio::signal::unix::{signal, SignalKind};
    let mut hup = signal(SignalKind::hangup()).ok();
    let mut seen = (modified(&cert), modified(&key));
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(5));
    loop {
        let by_signal = tokio::select! {
            _ = tick.tick() => false,
            _ = async {
                match hup.as_mut() {
                    Some(h) => { h.recv().await; }
                    None => std::future::pending::<()>().await,
                }
            } => true,
        };
        let now = (modified(&cert), modified(&key));
        if !by_signal && now == seen {
            continue;
        }
        seen = now;
        match load_pem(&cert, &key) {
            Ok(ck) => {
                certs.replace(Served::new(ck, source));
                tracing::info!(cert = %cert.display(), "TLS certificate reloaded");
                if let Some(view) = certs.view(crate::clock::Timestamp::now()) {
                    for w in view.warnings {
                        tracing::warn!(kind = w.kind().as_str(), "{w}");
                    }
                }
            }
            Err(e) => tracing::error!(
                error = %e,
                "refusing the new TLS certificate; still serving the previous one"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(name: &str) -> (String, String) {
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec![name.to_owned()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        (cert.pem(), key.serialize_pem())
    }

    #[test]
    fn each_fatal_fault_is_named() {
        let d = tempfile::tempdir().unwrap();
        let (cert, key) = pair("a.example");
        let (_, other_key) = pair("b.example");
        let w = |name: &str, text: &str| {
            let p = d.path().join(name);
            std::fs::write(&p, text).unwrap();
            p
        };
        let (c, k) = (w("c.pem", &cert), w("k.pem", &key));
        assert!(load_pem(&c, &k).is_ok());
        let missing = d.path().join("missing.pem");
        let cases: Vec<(PathBuf, PathBuf, &str)> = vec![
            (
                missing.clone(),
                k.clone(),
                "cannot read the certificate file",
            ),
            (c.clone(), missing, "cannot read the private key file"),
            (
                w("der.pem", "not pem at all"),
                k.clone(),
                "holds no PEM certificate",
            ),
            (
                w(
                    "broken.pem",
                    "-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n",
                ),
                k.clone(),
                "is not a PEM certificate chain",
            ),
            (
                w(
                    "junk.pem",
                    "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
                ),
                k.clone(),
                "not a valid X.509 certificate",
            ),
            (c.clone(), w("nokey.pem", &cert), "holds no PEM private key"),
            (
                c.clone(),
                w("other.pem", &other_key),
                "does not belong to the certificate",
            ),
        ];
        for (cert, key, expected) in cases {
            let e = load_pem(&cert, &key).unwrap_err().to_string();
            assert!(e.contains(expected), "{expected:?} not in {e:?}");
        }
    }

    #[cfg(unix)]
    #[test]
    fn private_files_are_0600_and_replaced_whole() {
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("key.pem");
        write_private(&p, b"one").unwrap();
        write_private(&p, b"two").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"two");
        let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }
}
