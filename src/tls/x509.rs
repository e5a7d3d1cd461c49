//! What we read from a certificate (RFC 5280): subject and issuer, the names it is
//! valid for, its validity period, and whether it signed itself. Parsing is
//! x509-parser's (pure Rust, bounds-checked): a malformed certificate yields `None`,
//! never a panic. Knows nothing of files, TLS connections or ACME.

use std::net::IpAddr;

use crate::clock::Timestamp;

use x509_parser::extensions::GeneralName;
use x509_parser::prelude::FromDer;
use x509_parser::x509::X509Name;

/// What the dashboard, the metrics and the certificate checks need to know about one
/// certificate. The validity period is RFC 5280 §4.1.2.5's `notBefore`, `notAfter`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertInfo {
    /// The subject's common name, if it has one.
    pub subject_cn: Option<String>,
    /// The issuer, for people: its common name, or the whole distinguished name
    /// (`O=Example, C=DE`) when it has none.
    pub issuer: String,
    /// The names the certificate is valid for: subjectAltName DNS names (lowercase)
    /// and IP addresses (RFC 5280 §4.2.1.6), in certificate order. When there is no
    /// subjectAltName, the subject's common name stands in, as older clients do.
    pub names: Vec<String>,
    /// Start of the validity period, `notBefore` (RFC 5280 §4.1.2.5), in UTC.
    pub not_before: Timestamp,
    /// End of the validity period, `notAfter` (RFC 5280 §4.1.2.5), in UTC; the certificate
    /// is valid up to and including this instant.
    pub not_after: Timestamp,
    /// Issuer and subject are the same name (a self-signed or root certificate).
    pub self_issued: bool,
    /// The DER of the issuer and subject names, to find a certificate's issuer in a
    /// chain (RFC 5280 §4.1.2.4: names compare as encoded by the CA).
    pub issuer_der: Vec<u8>,
    /// The DER of the subject name (RFC 5280 §4.1.2.6), compared with another
    /// certificate's `issuer_der` to link a chain.
    pub subject_der: Vec<u8>,
}

fn common_name(name: &X509Name<'_>) -> Option<String> {
    name.iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .map(str::to_owned)
}

/// Reads one DER certificate; `None` when it is not one.
pub fn parse(der: &[u8]) -> Option<CertInfo> {
    let (_, cert) = x509_parser::certificate::X509Certificate::from_der(der).ok()?;
    let subject_cn = common_name(cert.subject());
    let issuer =
        common_name(cert.issuer()).unwrap_or_else(|| cert.issuer().to_string().trim().to_owned());
    let mut names = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for n in &san.value.general_names {
            match n {
                GeneralName::DNSName(d) => names.push(d.to_ascii_lowercase()),
                GeneralName::IPAddress(b) => {
                    let ip = match b.len() {
                        4 => <[u8; 4]>::try_from(*b).ok().map(IpAddr::from),
                        16 => <[u8; 16]>::try_from(*b).ok().map(IpAddr::from),
                        _ => None,
                    };
                    if let Some(ip) = ip {
                        names.push(ip.to_string());
                    }
                }
                _ => {}
            }
        }
    } else if let Some(cn) = &subject_cn {
        names.push(cn.to_ascii_lowercase());
    }
    let validity = cert.validity();
    Some(CertInfo {
        subject_cn,
        issuer,
        names,
        not_before: Timestamp::from(validity.not_before.to_datetime()),
        not_after: Timestamp::from(validity.not_after.to_datetime()),
        self_issued: cert.issuer().as_raw() == cert.subject().as_raw(),
        issuer_der: cert.issuer().as_raw().to_vec(),
        subject_der: cert.subject().as_raw().to_vec(),
    })
}

/// Whether `host` (a DNS name or an IP address, as in a URL) is one of `names`;
/// a `*.example.com` name covers exactly one more label (RFC 6125 §6.4.3).
pub fn covers(names: &[String], host: &str) -> bool {
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    names.iter().any(|n| {
        if *n == host {
            return true;
        }
        match n.strip_prefix("*.") {
            Some(parent) => host
                .split_once('.')
                .is_some_and(|(label, rest)| !label.is_empty() && rest == parent),
            None => false,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_generated_certificate() {
        let mut params = rcgen::CertificateParams::new(vec![
            "Scim.Example.com".to_owned(),
            "127.0.0.1".to_owned(),
        ])
        .unwrap();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "scimbridge test");
        params.not_before = rcgen::date_time_ymd(2026, 1, 2);
        params.not_after = rcgen::date_time_ymd(2060, 3, 4);
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        let info = parse(cert.der()).unwrap();
        assert_eq!(info.subject_cn.as_deref(), Some("scimbridge test"));
        assert_eq!(info.issuer, "scimbridge test");
        assert_eq!(info.names, ["scim.example.com", "127.0.0.1"]);
        assert_eq!(info.not_before.unix_seconds(), 1_767_312_000);
        assert_eq!(info.not_after.unix_seconds(), 2_845_584_000);
        assert!(info.self_issued);
    }

    #[test]
    fn an_issued_certificate_names_its_issuer() {
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca.distinguished_name = rcgen::DistinguishedName::new();
        ca.distinguished_name
            .push(rcgen::DnType::CommonName, "Test Intermediate");
        let issuer = rcgen::Issuer::new(ca, ca_key);
        let key = rcgen::KeyPair::generate().unwrap();
        let leaf = rcgen::CertificateParams::new(vec!["a.example".to_owned()])
            .unwrap()
            .signed_by(&key, &issuer)
            .unwrap();
        let info = parse(leaf.der()).unwrap();
        assert_eq!(info.issuer, "Test Intermediate");
        assert!(!info.self_issued);
        assert_ne!(info.issuer_der, info.subject_der);
    }

    #[test]
    fn wildcards_cover_one_label() {
        let names = vec!["*.example.com".to_owned(), "10.0.0.1".to_owned()];
        assert!(covers(&names, "scim.example.com"));
        assert!(covers(&names, "SCIM.example.com."));
        assert!(!covers(&names, "example.com"));
        assert!(!covers(&names, "a.b.example.com"));
        assert!(covers(&names, "10.0.0.1"));
        assert!(!covers(&names, "10.0.0.2"));
    }

    #[test]
    fn garbage_is_none_not_a_panic() {
        assert_eq!(parse(&[]), None);
        assert_eq!(parse(&[0x30, 0x84, 0xff, 0xff, 0xff, 0xff]), None);
        for n in 0..64u8 {
            let v: Vec<u8> = (0..n).map(|i| i.wrapping_mul(37).wrapping_add(n)).collect();
            let _ = parse(&v);
        }
    }
}
