//! Judging a certificate that loaded: the faults a server can run with but an
//! identity provider may refuse. Entra ID and Okta refuse a chain without its
//! intermediate, an expired certificate, and one that does not name the host they
//! connect to. Each warning reads as one sentence; its kind is a closed set for the
//! `/metrics` label. Pure: the time is passed in.

use std::fmt;

use rustls_pki_types::CertificateDer;

use super::x509::{self, CertInfo};
use crate::clock::Timestamp;

/// The kinds of warning, for metric labels (a fixed set, never free text).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum WarningKind {
    ChainIncomplete,
    Expired,
    NotYetValid,
    NameMismatch,
}

impl WarningKind {
    pub(crate) const ALL: [WarningKind; 4] = [
        WarningKind::ChainIncomplete,
        WarningKind::Expired,
        WarningKind::NotYetValid,
        WarningKind::NameMismatch,
    ];

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            WarningKind::ChainIncomplete => "chain_incomplete",
            WarningKind::Expired => "expired",
            WarningKind::NotYetValid => "not_yet_valid",
            WarningKind::NameMismatch => "name_mismatch",
        }
    }
}

/// Something wrong with a certificate that still loads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum CertWarning {
    /// The leaf's issuer is not in the file and the leaf did not sign itself. A
    /// private CA may sign straight from a root its clients hold, so this is no error.
    ChainIncomplete { issuer: String },
    /// `notAfter` has passed.
    Expired { not_after: Timestamp },
    /// `notBefore` is still ahead.
    NotYetValid { not_before: Timestamp },
    /// The host of `public_url` is not among the certificate's names.
    NameMismatch { host: String, names: Vec<String> },
}

impl CertWarning {
    pub(crate) fn kind(&self) -> WarningKind {
        match self {
            CertWarning::ChainIncomplete { .. } => WarningKind::ChainIncomplete,
            CertWarning::Expired { .. } => WarningKind::Expired,
            CertWarning::NotYetValid { .. } => WarningKind::NotYetValid,
            CertWarning::NameMismatch { .. } => WarningKind::NameMismatch,
        }
    }
}

impl fmt::Display for CertWarning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CertWarning::ChainIncomplete { issuer } => write!(
                f,
                "the certificate file lacks the intermediate certificate of its issuer \"{issuer}\": \
                 append it after the certificate (Okta refuses a chain without it)"
            ),
            CertWarning::Expired { not_after } => write!(
                f,
                "the certificate expired at {not_after}: identity providers refuse it; renew it"
            ),
            CertWarning::NotYetValid { not_before } => write!(
                f,
                "the certificate is not valid before {not_before}: check this machine's clock or the certificate"
            ),
            CertWarning::NameMismatch { host, names } => write!(
                f,
                "the public URL's host \"{host}\" is not among the certificate's names ({}): \
                 identity providers connecting to it will refuse the certificate",
                if names.is_empty() {
                    "none".to_owned()
                } else {
                    names.join(", ")
                }
            ),
        }
    }
}

/// Whether the leaf's issuer is in the chain or the leaf issued itself.
pub(crate) fn chain_complete(chain: &[CertificateDer<'_>], leaf: Option<&CertInfo>) -> bool {
    let Some(leaf) = leaf else {
        return true;
    };
    leaf.self_issued
        || chain
            .iter()
            .skip(1)
            .filter_map(|c| x509::parse(c))
            .any(|c| c.subject_der == leaf.issuer_der)
}

/// The warnings about a served leaf at `now`, given whether its chain
/// is complete and the host the public URL names.
pub(crate) fn warnings(
    leaf: &CertInfo,
    chain_complete: bool,
    public_host: Option<&str>,
    now: Timestamp,
) -> Vec<CertWarning> {
    let mut w = Vec::new();
    if !chain_complete {
        w.push(CertWarning::ChainIncomplete {
            issuer: leaf.issuer.clone(),
        });
    }
    if now > leaf.not_after {
        w.push(CertWarning::Expired {
            not_after: leaf.not_after,
        });
    }
    if now < leaf.not_before {
        w.push(CertWarning::NotYetValid {
            not_before: leaf.not_before,
        });
    }
    if let Some(host) = public_host {
        if !x509::covers(&leaf.names, host) {
            w.push(CertWarning::NameMismatch {
                host: host.to_owned(),
                names: leaf.names.clone(),
            });
        }
    }
    w
}

/// The host of a URL such as `https://scim.example.com:8443/x` (`scim.example.com`),
/// or of `https://[::1]/` (`::1`).
pub(crate) fn url_host(url: &str) -> Option<String> {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split(['/', '?', '#']).next()?;
    let authority = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let host = match authority.strip_prefix('[') {
        Some(v6) => v6.split(']').next()?,
        None => authority.split(':').next()?,
    };
    (!host.is_empty()).then(|| host.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(secs: i64) -> Timestamp {
        Timestamp::from_unix_ms(secs * 1000).unwrap()
    }

    fn info(names: &[&str], not_before: i64, not_after: i64) -> CertInfo {
        let (not_before, not_after) = (t(not_before), t(not_after));
        CertInfo {
            subject_cn: None,
            issuer: "Example CA".into(),
            names: names.iter().map(|n| n.to_string()).collect(),
            not_before,
            not_after,
            self_issued: false,
            issuer_der: vec![1],
            subject_der: vec![2],
        }
    }

    #[test]
    fn a_good_certificate_has_no_warnings() {
        let i = info(&["scim.example.com"], 0, 100);
        assert!(warnings(&i, true, Some("scim.example.com"), t(50)).is_empty());
        assert!(warnings(&i, true, None, t(50)).is_empty());
    }

    #[test]
    fn each_fault_is_named() {
        let i = info(&["a.example.com"], 10, 100);
        let kinds = |w: Vec<CertWarning>| w.iter().map(|w| w.kind()).collect::<Vec<_>>();
        assert_eq!(
            kinds(warnings(&i, false, None, t(50))),
            [WarningKind::ChainIncomplete]
        );
        assert_eq!(
            kinds(warnings(&i, true, None, t(101))),
            [WarningKind::Expired]
        );
        assert_eq!(
            kinds(warnings(&i, true, None, t(5))),
            [WarningKind::NotYetValid]
        );
        let w = warnings(&i, true, Some("scim.example.com"), t(50));
        assert_eq!(kinds(w.clone()), [WarningKind::NameMismatch]);
        let text = w[0].to_string();
        assert!(
            text.contains("scim.example.com") && text.contains("a.example.com"),
            "{text}"
        );
        let text = warnings(&i, false, None, t(50))[0].to_string();
        assert!(
            text.contains("intermediate") && text.contains("Example CA"),
            "{text}"
        );
    }

    #[test]
    fn url_hosts() {
        assert_eq!(
            url_host("https://Scim.Example.com:8443/x").as_deref(),
            Some("scim.example.com")
        );
        assert_eq!(url_host("https://[::1]:8443").as_deref(), Some("::1"));
        assert_eq!(
            url_host("http://10.0.0.1/scim").as_deref(),
            Some("10.0.0.1")
        );
        assert_eq!(url_host("https://"), None);
    }
}
