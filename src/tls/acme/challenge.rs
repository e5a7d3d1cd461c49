//! Challenge responses: the TLS-ALPN-01 certificate (RFC 8737 §3) served through the
//! certificate resolver, and the HTTP-01 key authorizations (RFC 8555 §8.3) that the
//! plain listener answers at `/.well-known/acme-challenge/{token}`.

use std::collections::HashMap;
use std::sync::RwLock;

use anyhow::{anyhow, Result};
use rustls::sign::CertifiedKey;

use rustls_pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};

/// The self-signed certificate a TLS-ALPN-01 validation expects for `name`: that name
/// as its only subjectAltName and the SHA-256 of the key authorization in a critical
/// acmeIdentifier extension.
pub(crate) fn tls_alpn_certificate(
    name: &str,
    key_authorization_sha256: &[u8],
) -> Result<CertifiedKey> {
    let mut params = rcgen::CertificateParams::new(vec![name.to_owned()])
        .map_err(|e| anyhow!("challenge certificate for {name}: {e}"))?;
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .custom_extensions
        .push(rcgen::CustomExtension::new_acme_identifier(
            key_authorization_sha256,
        ));
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
        .map_err(|e| anyhow!("challenge key: {e}"))?;
    let cert = params
        .self_signed(&key)
        .map_err(|e| anyhow!("challenge certificate for {name}: {e}"))?;
    // Not through `certified_key`: its key check parses the certificate with webpki,
    // which refuses the critical acmeIdentifier extension it does not know.
    let key_der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    let signing = rustls::crypto::ring::sign::any_supported_type(&key_der)
        .map_err(|e| anyhow!("challenge key: {e}"))?;
    Ok(CertifiedKey::new(vec![cert.der().clone()], signing))
}

/// HTTP-01 tokens → key authorizations, while an order is being validated.
#[derive(Debug, Default)]
pub(crate) struct Http01Tokens(RwLock<HashMap<String, String>>);

impl Http01Tokens {
    /// The key authorization to answer for `token`, if one is being validated.
    pub(crate) fn get(&self, token: &str) -> Option<String> {
        self.0.read().ok()?.get(token).cloned()
    }

    pub(crate) fn insert(&self, token: &str, key_authorization: &str) {
        if let Ok(mut m) = self.0.write() {
            m.insert(token.to_owned(), key_authorization.to_owned());
        }
    }

    pub(crate) fn clear(&self) {
        if let Ok(mut m) = self.0.write() {
            m.clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_alpn_certificate_names_the_domain_and_carries_the_digest() {
        let digest = [7u8; 32];
        let ck = tls_alpn_certificate("scim.example.com", &digest).unwrap();
        let der = ck.cert[0].to_vec();
        let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
        let ext = cert
            .extensions()
            .iter()
            .find(|e| e.oid.to_id_string() == "1.3.6.1.5.5.7.1.31")
            .expect("acmeIdentifier extension");
        assert!(ext.critical);
        // An OCTET STRING holding the 32-byte digest.
        assert_eq!(&ext.value[..2], &[0x04, 32]);
        assert_eq!(&ext.value[2..], &digest);
        let info = crate::tls::x509::parse(&der).unwrap();
        assert_eq!(info.names, ["scim.example.com"]);
    }
}
