//! TLS for the listener: rustls with the ring provider, TLS 1.2 and 1.3 only. The
//! certificate comes from PEM files or is generated (self-signed) on first start and
//! kept in the data directory. A `CertStore` resolver holds the current certificate
//! so that it can be swapped without restarting.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use anyhow::{anyhow, Context, Result};
use rustls::crypto::ring as provider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// The certificate served now; replaced atomically on reload.
#[derive(Debug)]
pub struct CertStore {
    current: RwLock<Arc<CertifiedKey>>,
    /// The leaf certificate (DER), for showing subject and expiry.
    leaf: RwLock<Vec<u8>>,
}

impl CertStore {
    pub fn new(key: CertifiedKey) -> Self {
        let leaf = key.cert.first().map(|c| c.to_vec()).unwrap_or_default();
        CertStore {
            current: RwLock::new(Arc::new(key)),
            leaf: RwLock::new(leaf),
        }
    }

    pub fn replace(&self, key: CertifiedKey) {
        let leaf = key.cert.first().map(|c| c.to_vec()).unwrap_or_default();
        if let Ok(mut c) = self.current.write() {
            *c = Arc::new(key);
        }
        if let Ok(mut l) = self.leaf.write() {
            *l = leaf;
        }
    }

    pub fn leaf_der(&self) -> Vec<u8> {
        self.leaf.read().map(|l| l.clone()).unwrap_or_default()
    }
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.current.read().ok().map(|c| c.clone())
    }
}

/// Loads a certificate chain and private key from PEM files.
pub fn load_pem(cert: &Path, key: &Path) -> Result<CertifiedKey> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .with_context(|| {
            format!(
                "cannot read the certificate file {}; check tls.cert / --tls-cert",
                cert.display()
            )
        })?
        .collect::<Result<_, _>>()
        .with_context(|| format!("{} is not a PEM certificate chain", cert.display()))?;
    if chain.is_empty() {
        return Err(anyhow!(
            "{} holds no certificate (expected -----BEGIN CERTIFICATE-----)",
            cert.display()
        ));
    }
    let key_der = PrivateKeyDer::from_pem_file(key).with_context(|| {
        format!(
            "cannot read a PEM private key from {}; check tls.key / --tls-key",
            key.display()
        )
    })?;
    let signing = provider::sign::any_supported_type(&key_der)
        .map_err(|e| anyhow!("the private key in {} is not usable: {e}", key.display()))?;
    let ck = CertifiedKey::new(chain, signing);
    ck.keys_match().map_err(|e| {
        anyhow!(
            "the key {} does not match the certificate {}: {e}",
            key.display(),
            cert.display()
        )
    })?;
    Ok(ck)
}

/// Paths of the generated certificate in the data directory.
pub fn self_signed_paths(data_dir: &Path) -> (PathBuf, PathBuf) {
    let dir = data_dir.join("tls");
    (dir.join("cert.pem"), dir.join("key.pem"))
}

/// Returns the self-signed certificate of this data directory, generating it on first
/// start (valid for localhost, 127.0.0.1, ::1 and `extra_names`).
pub fn ensure_self_signed(
    data_dir: &Path,
    extra_names: &[String],
) -> Result<(PathBuf, PathBuf, bool)> {
    let (cert, key) = self_signed_paths(data_dir);
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
    let mut params =
        rcgen::CertificateParams::new(names).map_err(|e| anyhow!("certificate parameters: {e}"))?;
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "scimbridge self-signed");
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::days(1);
    params.not_after = now + time::Duration::days(825);
    let key_pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
        .map_err(|e| anyhow!("generating a key: {e}"))?;
    let certificate = params
        .self_signed(&key_pair)
        .map_err(|e| anyhow!("self-signing: {e}"))?;
    write_private(&key, key_pair.serialize_pem().as_bytes())?;
    std::fs::write(&cert, certificate.pem())
        .with_context(|| format!("cannot write {}", cert.display()))?;
    Ok((cert, key, true))
}

fn write_private(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts
        .open(path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    f.write_all(bytes)
        .with_context(|| format!("cannot write {}", path.display()))?;
    f.sync_all()?;
    Ok(())
}

/// The rustls server configuration around a certificate store.
pub fn server_config(certs: Arc<CertStore>) -> Result<rustls::ServerConfig> {
    let mut cfg =
        rustls::ServerConfig::builder_with_provider(Arc::new(provider::default_provider()))
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(|e| anyhow!("TLS configuration: {e}"))?
            .with_no_client_auth()
            .with_cert_resolver(certs);
    // http/1.0 too: a client that offers only it must get a connection, not a
    // fatal no_application_protocol alert (hyper serves HTTP/1.0).
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec(), b"http/1.0".to_vec()];
    Ok(cfg)
}

fn modified(path: &Path) -> Option<std::time::SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

/// Reloads the certificate on SIGHUP and when either file changes (checked every few
/// seconds). A certificate that does not load keeps the old one serving, and the
/// log says why. Established connections are unaffected: only new handshakes see
/// the new certificate.
pub async fn watch(certs: Arc<CertStore>, cert: PathBuf, key: PathBuf) {
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
                certs.replace(ck);
                tracing::info!(cert = %cert.display(), "TLS certificate reloaded");
            }
            Err(e) => {
                tracing::error!(error = %format!("{e:#}"), "the new TLS certificate does not load; still serving the previous one")
            }
        }
    }
}
