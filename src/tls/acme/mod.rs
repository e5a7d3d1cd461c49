//! ACME (RFC 8555) certificates: obtained from the CA with TLS-ALPN-01 (RFC 8737) on
//! the bridge's own listener, or HTTP-01 through the optional plain listener, kept in
//! the data directory, served through the `CertStore` and renewed in place at two
//! thirds of the lifetime, or earlier when the CA's renewal information (RFC 9773)
//! says so. The protocol is instant-acme's; this module decides when to order, answers
//! the challenges, keeps what was issued, and says what went wrong in words and as a
//! kind from a closed set. Knows nothing of HTTP serving: the plain HTTP-01 listener
//! lives in the HTTP edge and reads `Http01Tokens`.

mod challenge;
mod client;
mod storage;

use std::fmt;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use instant_acme::{
    Account, AuthorizationStatus, CertificateIdentifier, ChallengeType, ExternalAccountKey,
    Identifier, NewAccount, NewOrder, OrderStatus, Problem, RetryPolicy,
};
use rustls_pki_types::CertificateDer;

pub(crate) use challenge::Http01Tokens;

use super::{CertSource, CertStore, Served};
use crate::clock::Timestamp;
use crate::config::AcmeConfig;
use client::{CaClient, RetryAfter};
use storage::Storage;

/// The first retry after a failure waits this long; each further failure doubles it.
const FIRST_RETRY: Duration = Duration::from_secs(30);
/// Retries never wait longer than this (unless the CA asks for more).
const LONGEST_RETRY: Duration = Duration::from_secs(3600);
/// A rate-limited answer without `Retry-After` waits this long.
const RATE_LIMIT_WAIT: Duration = Duration::from_secs(3600);
/// Renewal information is asked again after at most this long (RFC 9773 §4.3.2).
const RENEWAL_INFO_RECHECK: Duration = Duration::from_secs(6 * 3600);
/// Polling an order for validation or issuance gives up after this long.
const ORDER_TIMEOUT: Duration = Duration::from_secs(120);

/// Why the last order failed, as a fixed set (the `/metrics` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AcmeErrorKind {
    /// The CA could not be reached, or answered something that is not ACME.
    Network,
    /// The CA's rate limit (`rateLimited`).
    RateLimited,
    /// The CA refused the order or the names (policy, CAA, unsupported identifier, bad CSR).
    Rejected,
    /// The CA could not validate a challenge (no connection, wrong answer, DNS).
    Challenge,
    /// The account: unknown to the CA, External Account Binding needed or refused,
    /// contact refused, terms to agree to.
    Account,
    /// The CA did not finish validating or issuing in time.
    Timeout,
    /// The certificate could not be kept in the data directory.
    Storage,
    /// Anything else (the CA's own errors included).
    Other,
}

impl AcmeErrorKind {
    pub(crate) const ALL: [AcmeErrorKind; 8] = [
        AcmeErrorKind::Network,
        AcmeErrorKind::RateLimited,
        AcmeErrorKind::Rejected,
        AcmeErrorKind::Challenge,
        AcmeErrorKind::Account,
        AcmeErrorKind::Timeout,
        AcmeErrorKind::Storage,
        AcmeErrorKind::Other,
    ];

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            AcmeErrorKind::Network => "network",
            AcmeErrorKind::RateLimited => "rate_limited",
            AcmeErrorKind::Rejected => "rejected",
            AcmeErrorKind::Challenge => "challenge",
            AcmeErrorKind::Account => "account",
            AcmeErrorKind::Timeout => "timeout",
            AcmeErrorKind::Storage => "storage",
            AcmeErrorKind::Other => "other",
        }
    }
}

/// A failed attempt to obtain a certificate, in words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct AcmeFailure {
    pub kind: AcmeErrorKind,
    /// One sentence for the admin (the CA's own explanation included).
    pub message: String,
    /// When it happened.
    pub at: Timestamp,
}

impl fmt::Display for AcmeFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

/// What the dashboard and `/metrics` show about ACME.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct AcmeStatus {
    /// The directory URL orders go to.
    pub directory: String,
    /// When the next order is due (renewal, or retry after a failure).
    pub next_renewal: Option<Timestamp>,
    /// The last failure; cleared when a certificate is issued.
    pub last_error: Option<AcmeFailure>,
}

/// `d` after `t`.
fn later(t: Timestamp, d: Duration) -> Timestamp {
    t.saturating_add(time::Duration::try_from(d).unwrap_or(time::Duration::MAX))
}

/// How long from `now` until `t` (zero when it has passed).
fn until(t: Timestamp, now: Timestamp) -> Duration {
    Duration::try_from(t.since(now)).unwrap_or_default()
}

/// Warnings about the listening ports, for `check-config` and the start-up log: CAs
/// validate TLS-ALPN-01 on port 443 and HTTP-01 on port 80 only (RFC 8737 §3,
/// RFC 8555 §8.3).
pub(crate) fn port_warnings(listen: SocketAddr, acme: &AcmeConfig) -> Vec<String> {
    let mut w = Vec::new();
    match acme.http_listen {
        None if listen.port() != 443 => w.push(format!(
            "ACME: the CA validates TLS-ALPN-01 on port 443 only, and the listener is on port {}: \
             this works only if port 443 of {} is forwarded to it; otherwise listen on 443 \
             or add an HTTP-01 listener on port 80 (--acme-http-listen 0.0.0.0:80)",
            listen.port(),
            acme.domains.join(", ")
        )),
        Some(http) if http.port() != 80 => w.push(format!(
            "ACME: the CA validates HTTP-01 on port 80 only, and the HTTP-01 listener is on port {}: \
             this works only if port 80 of {} is forwarded to it; otherwise listen on port 80",
            http.port(),
            acme.domains.join(", ")
        )),
        _ => {}
    }
    w
}

/// Reads what an ACME run needs from files (the CA file, the EAB key), so that
/// `check-config` and the start name a bad file at once rather than at the first order.
pub(crate) fn check_files(acme: &AcmeConfig) -> Result<()> {
    ca_pem(acme)?;
    if let Some(eab) = &acme.eab {
        eab_key(&eab.hmac_key_file)?;
    }
    Ok(())
}

fn ca_pem(acme: &AcmeConfig) -> Result<Option<Vec<u8>>> {
    let Some(path) = &acme.ca_file else {
        return Ok(None);
    };
    let pem = std::fs::read(path).with_context(|| {
        format!(
            "cannot read the ACME CA file {}; check tls.acme.ca_file / --acme-ca-file",
            path.display()
        )
    })?;
    crate::tls::client_config(Some(&pem)).map_err(|e| anyhow!("{}: {e}", path.display()))?;
    Ok(Some(pem))
}

/// The External Account Binding HMAC key, as CAs hand it out: base64url (RFC 8555 §7.3.4).
fn eab_key(path: &Path) -> Result<Vec<u8>> {
    use base64::Engine;
    let text = std::fs::read_to_string(path).with_context(|| {
        format!(
            "cannot read the EAB HMAC key file {}; check tls.acme.eab_hmac_key_file",
            path.display()
        )
    })?;
    let text = text.trim().trim_end_matches('=');
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(text)
        .ok()
        .filter(|k| !k.is_empty())
        .ok_or_else(|| {
            anyhow!(
                "{} does not hold a base64url HMAC key as the CA gave it",
                path.display()
            )
        })
}

/// A failure as it happened, with the CA's wish for when to come back.
struct Failed {
    kind: AcmeErrorKind,
    message: String,
    retry_at: Option<Timestamp>,
}

fn problem_words(p: &Problem) -> String {
    let kind = p
        .r#type
        .as_deref()
        .map(|t| t.trim_start_matches("urn:ietf:params:acme:error:"))
        .unwrap_or("error");
    let mut s = format!(
        "{} ({kind})",
        p.detail.as_deref().unwrap_or("no detail given")
    );
    for sub in &p.subproblems {
        if let Some(d) = &sub.detail {
            s.push_str("; ");
            s.push_str(d);
        }
    }
    s
}

fn problem_kind(p: &Problem) -> AcmeErrorKind {
    let t = p.r#type.as_deref().unwrap_or("");
    match t.trim_start_matches("urn:ietf:params:acme:error:") {
        "rateLimited" => AcmeErrorKind::RateLimited,
        "rejectedIdentifier"
        | "unsupportedIdentifier"
        | "caa"
        | "badCSR"
        | "badRevocationReason"
        | "badSignatureAlgorithm" => AcmeErrorKind::Rejected,
        "connection" | "dns" | "tls" | "incorrectResponse" | "unauthorized" => {
            AcmeErrorKind::Challenge
        }
        "accountDoesNotExist"
        | "externalAccountRequired"
        | "invalidContact"
        | "unsupportedContact"
        | "userActionRequired"
        | "badPublicKey" => AcmeErrorKind::Account,
        _ => AcmeErrorKind::Other,
    }
}

fn is_unknown_account(e: &instant_acme::Error) -> bool {
    matches!(e, instant_acme::Error::Api(p)
        if p.r#type.as_deref() == Some("urn:ietf:params:acme:error:accountDoesNotExist"))
}

impl Failed {
    fn new(kind: AcmeErrorKind, message: impl Into<String>) -> Failed {
        Failed {
            kind,
            message: message.into(),
            retry_at: None,
        }
    }

    /// A library error met while `step` ("ordering a certificate for …"), in words.
    fn from_acme(step: &str, e: instant_acme::Error) -> Failed {
        use instant_acme::Error as E;
        let (kind, cause) = match e {
            E::Api(p) => (
                problem_kind(&p),
                format!("the CA refused: {}", problem_words(&p)),
            ),
            E::Timeout(_) => (
                AcmeErrorKind::Timeout,
                format!("the CA did not finish within {ORDER_TIMEOUT:?}"),
            ),
            E::Hyper(_) | E::Http(_) | E::Other(_) | E::InvalidUri(_) => (
                AcmeErrorKind::Network,
                format!("the CA could not be reached: {}", chain(&e)),
            ),
            E::Json(_) => (
                AcmeErrorKind::Network,
                format!("the CA's answer is not ACME ({e}); check the directory URL"),
            ),
            other => (AcmeErrorKind::Other, chain(&other)),
        };
        Failed::new(kind, format!("{step}: {cause}"))
    }
}

fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(c) = source {
        let text = c.to_string();
        if !s.contains(&text) {
            s.push_str(": ");
            s.push_str(&text);
        }
        source = c.source();
    }
    s
}

/// When to order next: the renewal time and, when the CA's renewal information
/// should be asked again before then, that time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Plan {
    renew_at: Timestamp,
    recheck_at: Option<Timestamp>,
}

/// Two thirds into the validity period.
fn two_thirds(not_before: Timestamp, not_after: Timestamp) -> Timestamp {
    let lifetime = not_after.since(not_before).max(time::Duration::ZERO);
    not_before.saturating_add(lifetime * 2 / 3)
}

/// The renewal time given the CA's suggested window (RFC 9773 §4.2): a uniformly
/// random moment in it (`fraction` in [0, 1)), or now if it has passed, but never
/// later than two thirds of the lifetime.
fn renewal_time(
    two_thirds: Timestamp,
    window: Option<(Timestamp, Timestamp)>,
    fraction: f64,
    now: Timestamp,
) -> Timestamp {
    let Some((start, end)) = window else {
        return two_thirds;
    };
    let suggested = if end <= now {
        now
    } else {
        let span = end.since(start).max(time::Duration::ZERO);
        start.saturating_add(span * fraction.clamp(0.0, 1.0))
    };
    suggested.min(two_thirds)
}

/// The wait after `failures` consecutive failures.
fn backoff(failures: u32) -> Duration {
    FIRST_RETRY
        .saturating_mul(1 << failures.saturating_sub(1).min(16))
        .min(LONGEST_RETRY)
}

fn random_fraction() -> f64 {
    let mut b = [0u8; 8];
    let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut b);
    (u64::from_le_bytes(b) >> 11) as f64 / (1u64 << 53) as f64
}

/// The ACME task: owns the account, orders and renews, and keeps the `CertStore`'s
/// ACME status current.
pub(crate) struct Acme {
    cfg: AcmeConfig,
    storage: Storage,
    certs: Arc<CertStore>,
    http01: Arc<Http01Tokens>,
    retry_after: RetryAfter,
    /// Loaded or registered on first need (not at start: a restart with a valid
    /// certificate need not reach the CA at all).
    account: Option<Account>,
    /// Whether the CA offers renewal information (RFC 9773); `None` until asked.
    renewal_info_offered: Option<bool>,
    /// The CA's last renewal advice, for the certificate it was given for.
    advice: Option<Advice>,
}

/// Renewal information (RFC 9773 §4.2) received for one certificate.
struct Advice {
    leaf: Vec<u8>,
    window: Option<(Timestamp, Timestamp)>,
    ask_again: Timestamp,
}

/// However far the next renewal, the task wakes this often to plan again (clock
/// changes, suspended machines).
const LONGEST_SLEEP: Duration = Duration::from_secs(3600);

impl Acme {
    /// Prepares ACME mode before the listener starts: the stored certificate if there
    /// is one, else a temporary self-signed one (logged as such). The returned store
    /// serves at once; `run` obtains and renews.
    pub(crate) fn prepare(
        cfg: &AcmeConfig,
        data_dir: &Path,
        public_host: Option<String>,
    ) -> Result<(Arc<CertStore>, Acme)> {
        check_files(cfg)?;
        let storage = Storage::new(data_dir);
        let served = match storage.certificate() {
            Some(key) => {
                tracing::info!(
                    file = %data_dir.join("acme/certificate.pem").display(),
                    "serving the stored ACME certificate"
                );
                Served::new(key, CertSource::Acme)
            }
            None => {
                tracing::warn!(
                    "serving a TEMPORARY self-signed certificate for {} until the ACME CA issues one; \
                     identity providers refuse it until then",
                    cfg.domains.join(", ")
                );
                Served::new(
                    super::self_signed::temporary(&cfg.domains)?,
                    CertSource::AcmeTemporary,
                )
            }
        };
        let certs = Arc::new(CertStore::new(served, public_host));
        certs.update_acme(|s| s.directory = cfg.directory.clone());
        let acme = Acme {
            cfg: cfg.clone(),
            storage,
            certs: certs.clone(),
            http01: Arc::new(Http01Tokens::default()),
            retry_after: RetryAfter::default(),
            account: None,
            renewal_info_offered: None,
            advice: None,
        };
        Ok((certs, acme))
    }

    /// The HTTP-01 answers, for the plain listener.
    pub(crate) fn http01_tokens(&self) -> Arc<Http01Tokens> {
        self.http01.clone()
    }

    /// Obtains and renews for as long as the server runs.
    pub(crate) async fn run(mut self) {
        let mut failures = 0u32;
        loop {
            let plan = self.plan().await;
            self.certs
                .update_acme(|s| s.next_renewal = Some(plan.renew_at));
            let now = Timestamp::now();
            if plan.renew_at > now {
                let wake = plan
                    .recheck_at
                    .map_or(plan.renew_at, |r| r.min(plan.renew_at))
                    .min(later(now, LONGEST_SLEEP));
                tokio::time::sleep(until(wake, now)).await;
                if wake < plan.renew_at {
                    continue;
                }
            }
            match self.order().await {
                Ok(()) => {
                    failures = 0;
                    self.certs.update_acme(|s| s.last_error = None);
                }
                Err(f) => {
                    failures += 1;
                    let now = Timestamp::now();
                    let mut wait = backoff(failures);
                    if f.kind == AcmeErrorKind::RateLimited {
                        wait = wait.max(RATE_LIMIT_WAIT);
                    }
                    if let Some(at) = f.retry_at {
                        wait = until(at, now).max(FIRST_RETRY);
                    }
                    let retry = later(now, wait);
                    tracing::error!(
                        kind = f.kind.as_str(),
                        retry_in_secs = wait.as_secs(),
                        "ACME: {}; still serving the current certificate",
                        f.message
                    );
                    self.certs.update_acme(|s| {
                        s.last_error = Some(AcmeFailure {
                            kind: f.kind,
                            message: f.message,
                            at: now,
                        });
                        s.next_renewal = Some(retry);
                    });
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }

    /// When the served certificate should be replaced.
    async fn plan(&mut self) -> Plan {
        let now = Timestamp::now();
        let Some(served) = self.certs.current() else {
            return Plan {
                renew_at: now,
                recheck_at: None,
            };
        };
        let Some(info) = served
            .info
            .as_ref()
            .filter(|_| served.source == CertSource::Acme)
        else {
            return Plan {
                renew_at: now,
                recheck_at: None,
            };
        };
        let mut wanted: Vec<&str> = self.cfg.domains.iter().map(String::as_str).collect();
        let mut have: Vec<&str> = info.names.iter().map(String::as_str).collect();
        wanted.sort_unstable();
        have.sort_unstable();
        if wanted != have {
            tracing::info!(
                "ACME: the certificate names {} but the configuration asks for {}: ordering a new one",
                have.join(", "),
                wanted.join(", ")
            );
            return Plan {
                renew_at: now,
                recheck_at: None,
            };
        }
        if let Some(issued_by) = self.storage.certificate_directory() {
            if issued_by != self.cfg.directory {
                tracing::info!(
                    "ACME: the certificate was issued by {issued_by}, the configuration names {}: ordering a new one",
                    self.cfg.directory
                );
                return Plan {
                    renew_at: now,
                    recheck_at: None,
                };
            }
        }
        let two_thirds = two_thirds(info.not_before, info.not_after);
        let (window, recheck_at) = self.renewal_window(&served.key.cert[0]).await;
        Plan {
            renew_at: renewal_time(two_thirds, window, random_fraction(), now),
            recheck_at,
        }
    }

    /// The CA's suggested renewal window for `leaf` (RFC 9773), when the CA offers one
    /// and an account is at hand; and when to ask again (the CA's `Retry-After`,
    /// within bounds). Renewal information is advice: any failure here just means
    /// "two thirds", asked again later.
    async fn renewal_window(
        &mut self,
        leaf: &CertificateDer<'static>,
    ) -> (Option<(Timestamp, Timestamp)>, Option<Timestamp>) {
        let now = Timestamp::now();
        if self.renewal_info_offered == Some(false) {
            return (None, None);
        }
        if let Some(a) = &self.advice {
            if a.leaf == leaf.as_ref() && now < a.ask_again {
                return (a.window, Some(a.ask_again));
            }
        }
        let stored = self.storage.account(&self.cfg.directory).ok().flatten();
        if self.account.is_none() && stored.is_none() {
            return (None, None);
        }
        let (Ok(account), Ok(id)) = (self.account().await, CertificateIdentifier::try_from(leaf))
        else {
            return (None, Some(later(now, RENEWAL_INFO_RECHECK)));
        };
        let (window, ask_again) = match account.renewal_info(&id).await {
            Ok((info, ask_again)) => {
                self.renewal_info_offered = Some(true);
                let w = info.suggested_window;
                let window = (Timestamp::from(w.start), Timestamp::from(w.end));
                (
                    Some(window),
                    later(
                        now,
                        ask_again.clamp(Duration::from_secs(60), RENEWAL_INFO_RECHECK),
                    ),
                )
            }
            Err(instant_acme::Error::Unsupported(_)) => {
                self.renewal_info_offered = Some(false);
                return (None, None);
            }
            Err(e) => {
                tracing::debug!(error = %e, "ACME renewal information unavailable");
                (None, later(now, RENEWAL_INFO_RECHECK))
            }
        };
        self.advice = Some(Advice {
            leaf: leaf.to_vec(),
            window,
            ask_again,
        });
        (window, Some(ask_again))
    }

    /// The account: loaded from the data directory, or registered (with External
    /// Account Binding when configured) and stored.
    async fn account(&mut self) -> Result<Account, Failed> {
        if let Some(a) = &self.account {
            return Ok(a.clone());
        }
        let ca =
            ca_pem(&self.cfg).map_err(|e| Failed::new(AcmeErrorKind::Other, format!("{e:#}")))?;
        let http = CaClient::new(ca.as_deref(), self.retry_after.clone())
            .map_err(|e| Failed::new(AcmeErrorKind::Other, e))?;
        let builder = Account::builder_with_http(Box::new(http));
        let directory = &self.cfg.directory;
        let stored = self
            .storage
            .account(directory)
            .map_err(|e| Failed::new(AcmeErrorKind::Storage, format!("{e:#}")))?;
        let account = match stored {
            Some(credentials) => builder.from_credentials(credentials).await.map_err(|e| {
                Failed::from_acme(&format!("reading the ACME directory {directory}"), e)
            })?,
            None => {
                let contact = self.cfg.email.as_ref().map(|e| format!("mailto:{e}"));
                let contacts: Vec<&str> = contact.iter().map(String::as_str).collect();
                let eab = match &self.cfg.eab {
                    Some(eab) => Some(ExternalAccountKey::new(
                        eab.kid.clone(),
                        &eab_key(&eab.hmac_key_file)
                            .map_err(|e| Failed::new(AcmeErrorKind::Account, format!("{e:#}")))?,
                    )),
                    None => None,
                };
                let (account, credentials) = builder
                    .create(
                        &NewAccount {
                            contact: &contacts,
                            terms_of_service_agreed: true,
                            only_return_existing: false,
                        },
                        directory.clone(),
                        eab.as_ref(),
                    )
                    .await
                    .map_err(|e| {
                        Failed::from_acme(
                            &format!("registering an ACME account with {directory}"),
                            e,
                        )
                    })?;
                self.storage
                    .save_account(directory, credentials)
                    .map_err(|e| Failed::new(AcmeErrorKind::Storage, format!("{e:#}")))?;
                tracing::info!(
                    account = account.id(),
                    "ACME account registered with {directory}"
                );
                account
            }
        };
        self.account = Some(account.clone());
        Ok(account)
    }

    /// One order, start to end; the challenge answers are withdrawn whatever happens.
    async fn order(&mut self) -> Result<(), Failed> {
        let result = match self.order_once().await {
            Err((_, true)) => {
                tracing::info!("ACME: the CA no longer knows our account; registering a new one");
                self.storage.forget_account();
                self.account = None;
                self.order_once().await.map_err(|(f, _)| f)
            }
            other => other.map_err(|(f, _)| f),
        };
        self.certs.clear_challenges();
        self.http01.clear();
        result.map_err(|mut f| {
            if let Ok(mut slot) = self.retry_after.lock() {
                f.retry_at = slot.take().filter(|t| *t > Timestamp::now());
            }
            f
        })
    }

    /// The error's flag says the CA does not know the account (worth one retry with a
    /// new account).
    async fn order_once(&mut self) -> Result<(), (Failed, bool)> {
        let account = self.account().await.map_err(|f| (f, false))?;
        let directory = self.cfg.directory.clone();
        let identifiers: Vec<Identifier> = self
            .cfg
            .domains
            .iter()
            .map(|d| Identifier::Dns(d.clone()))
            .collect();
        let replaces = match self.certs.current() {
            Some(s) if s.source == CertSource::Acme && self.renewal_info_offered == Some(true) => {
                CertificateIdentifier::try_from(&s.key.cert[0])
                    .ok()
                    .map(|c| c.into_owned())
            }
            _ => None,
        };
        let mut new_order = NewOrder::new(&identifiers);
        if let Some(r) = replaces {
            new_order = new_order.replaces(r);
        }
        let mut order = account.new_order(&new_order).await.map_err(|e| {
            let unknown = is_unknown_account(&e);
            let step = format!("ordering a certificate for {}", self.cfg.domains.join(", "));
            (Failed::from_acme(&step, e), unknown)
        })?;
        let kind = if self.cfg.http_listen.is_some() {
            ChallengeType::Http01
        } else {
            ChallengeType::TlsAlpn01
        };
        self.authorize(&mut order, &kind).await?;
        let retries = RetryPolicy::new().timeout(ORDER_TIMEOUT);
        let status = order.poll_ready(&retries).await.map_err(|e| {
            (
                Failed::from_acme("waiting for the CA to validate the names", e),
                false,
            )
        })?;
        if status != OrderStatus::Ready {
            return Err((self.validation_failure(&mut order, &kind).await, false));
        }
        let (key, csr) = key_and_request(&self.cfg.domains).map_err(|f| (f, false))?;
        order.finalize_csr(csr.der()).await.map_err(|e| {
            (
                Failed::from_acme("sending the certificate request", e),
                false,
            )
        })?;
        let chain_pem = order
            .poll_certificate(&retries)
            .await
            .map_err(|e| (Failed::from_acme("downloading the certificate", e), false))?;
        let key_pem = key.serialize_pem();
        let ck =
            super::files::certified_key(chain_pem.as_bytes(), key_pem.as_bytes()).map_err(|e| {
                (
                    Failed::new(
                        AcmeErrorKind::Other,
                        format!("the CA issued an unusable certificate: {e}"),
                    ),
                    false,
                )
            })?;
        let served = Served::new(ck, CertSource::Acme);
        if let Some(info) = &served.info {
            tracing::info!(
                names = %info.names.join(","),
                issuer = %info.issuer,
                not_after = %info.not_after,
                "ACME certificate issued by {directory}; serving it"
            );
        }
        // Serve it even if it cannot be kept: a restart would order again, which the
        // error below says.
        self.certs.replace(served);
        self.storage
            .save_certificate(&chain_pem, &key_pem, &directory)
            .map_err(|e| {
                let words = format!("the new certificate is served but could not be kept: {e:#}");
                (Failed::new(AcmeErrorKind::Storage, words), false)
            })
    }

    /// Answers every pending authorization of `order` with a `kind` challenge (the
    /// HTTP-01 token or the TLS-ALPN-01 certificate set up first, then the CA told
    /// it may validate). The error's flag is always false (see `order_once`).
    async fn authorize(
        &mut self,
        order: &mut instant_acme::Order,
        kind: &ChallengeType,
    ) -> Result<(), (Failed, bool)> {
        let mut authorizations = order.authorizations();
        while let Some(authz) = authorizations.next().await {
            let mut authz = authz.map_err(|e| {
                (
                    Failed::from_acme("reading the order's authorizations", e),
                    false,
                )
            })?;
            match authz.status {
                AuthorizationStatus::Pending => {}
                AuthorizationStatus::Valid => continue,
                other => {
                    let name = authz.identifier().to_string();
                    return Err((
                        Failed::new(
                            AcmeErrorKind::Rejected,
                            format!("the CA's authorization for {name} is {other:?}, not pending"),
                        ),
                        false,
                    ));
                }
            }
            let name = authz.identifier().to_string();
            let mut challenge = authz.challenge(kind.clone()).ok_or_else(|| {
                (
                    Failed::new(
                        AcmeErrorKind::Rejected,
                        format!(
                            "the CA offers no {} challenge for {name}",
                            challenge_name(kind)
                        ),
                    ),
                    false,
                )
            })?;
            let key_authorization = challenge.key_authorization();
            match kind {
                ChallengeType::Http01 => self
                    .http01
                    .insert(&challenge.token, key_authorization.as_str()),
                _ => {
                    let cert =
                        challenge::tls_alpn_certificate(&name, key_authorization.digest().as_ref())
                            .map_err(|e| {
                                (Failed::new(AcmeErrorKind::Other, format!("{e:#}")), false)
                            })?;
                    self.certs.set_challenge(&name, cert);
                }
            }
            challenge.set_ready().await.map_err(|e| {
                (
                    Failed::from_acme(
                        &format!(
                            "answering the {} challenge for {name}",
                            challenge_name(kind)
                        ),
                        e,
                    ),
                    false,
                )
            })?;
        }
        Ok(())
    }

    /// Why an order ended invalid: the failed challenge's problem, in words.
    async fn validation_failure(
        &self,
        order: &mut instant_acme::Order,
        kind: &ChallengeType,
    ) -> Failed {
        let mut authorizations = order.authorizations();
        while let Some(Ok(mut authz)) = authorizations.next().await {
            let _ = authz.refresh().await;
            let name = authz.identifier().to_string();
            if let Some(p) = authz.challenges.iter().find_map(|c| c.error.as_ref()) {
                return Failed::new(
                    AcmeErrorKind::Challenge,
                    format!(
                        "the CA could not validate {name} by {}: {}",
                        challenge_name(kind),
                        problem_words(p)
                    ),
                );
            }
        }
        Failed::new(
            AcmeErrorKind::Challenge,
            format!(
                "the CA marked the order invalid without saying why ({})",
                challenge_name(kind)
            ),
        )
    }
}

fn challenge_name(kind: &ChallengeType) -> &'static str {
    match kind {
        ChallengeType::Http01 => "HTTP-01",
        ChallengeType::TlsAlpn01 => "TLS-ALPN-01",
        _ => "this",
    }
}

/// A new P-256 key and a certificate request for `domains` (no subject name: the
/// names are in the SAN extension, as CAs expect; RFC 8555 §7.4).
fn key_and_request(
    domains: &[String],
) -> Result<(rcgen::KeyPair, rcgen::CertificateSigningRequest), Failed> {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
        .map_err(|e| Failed::new(AcmeErrorKind::Other, format!("generating a key: {e}")))?;
    let mut params = rcgen::CertificateParams::new(domains.to_vec())
        .map_err(|e| Failed::new(AcmeErrorKind::Other, format!("certificate request: {e}")))?;
    params.distinguished_name = rcgen::DistinguishedName::new();
    let csr = params
        .serialize_request(&key)
        .map_err(|e| Failed::new(AcmeErrorKind::Other, format!("certificate request: {e}")))?;
    Ok((key, csr))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(secs: i64) -> Timestamp {
        Timestamp::from_unix_ms(secs * 1000).unwrap()
    }

    #[test]
    fn renews_at_two_thirds_of_the_lifetime() {
        assert_eq!(two_thirds(t(0), t(90 * 86_400)), t(60 * 86_400));
        assert_eq!(renewal_time(t(600), None, 0.5, t(0)), t(600));
    }

    /// RFC 9773 §4.2 renewal information, as instant-acme parses it from the CA (the
    /// JSON is the RFC's own example shape): a window before two thirds is used, a
    /// random point inside it; a window that has passed means now; a window after
    /// two thirds does not delay renewal.
    #[test]
    fn renewal_information_can_only_bring_renewal_forward() {
        let info: instant_acme::RenewalInfo = serde_json::from_str(
            r#"{"suggestedWindow": {"start": "2025-01-02T04:00:00Z", "end": "2025-01-03T04:00:00Z"},
                "explanationURL": "https://acme.example.com/docs/ari"}"#,
        )
        .unwrap();
        let w = info.suggested_window;
        let start = Timestamp::from(w.start);
        let window = (start, Timestamp::from(w.end));
        let days = |n: i64| start.saturating_add(time::Duration::days(n));
        let (two_thirds, before) = (days(30), days(-1));
        assert_eq!(renewal_time(two_thirds, Some(window), 0.0, before), start);
        assert_eq!(
            renewal_time(two_thirds, Some(window), 0.5, before),
            start.saturating_add(time::Duration::hours(12))
        );
        let after_window = days(2);
        assert_eq!(
            renewal_time(two_thirds, Some(window), 0.5, after_window),
            after_window
        );
        let early = start.saturating_add(time::Duration::hours(-1));
        assert_eq!(renewal_time(early, Some(window), 0.5, before), early);
    }

    /// The RFC 9773 §4.1 certificate identifier of a certificate we would renew, as
    /// sent in `renewalInfo/{id}` and in the new order's `replaces`.
    #[test]
    fn certificate_identifier_for_renewal_information() {
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca.key_identifier_method = rcgen::KeyIdMethod::PreSpecified(vec![0xC0, 0xFF, 0xEE]);
        let issuer = rcgen::Issuer::new(ca, ca_key);
        let mut leaf = rcgen::CertificateParams::new(vec!["scim.example.com".to_owned()]).unwrap();
        leaf.serial_number = Some(rcgen::SerialNumber::from_slice(&[0xCA, 0xFE]));
        leaf.use_authority_key_identifier_extension = true;
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = leaf.signed_by(&key, &issuer).unwrap();
        let id = CertificateIdentifier::try_from(cert.der()).unwrap();
        assert_eq!(id.to_string(), "wP_u.AMr-");
    }

    #[test]
    fn retries_back_off_to_an_hour() {
        assert_eq!(backoff(1), Duration::from_secs(30));
        assert_eq!(backoff(2), Duration::from_secs(60));
        assert_eq!(backoff(30), LONGEST_RETRY);
        let f = random_fraction();
        assert!((0.0..1.0).contains(&f));
    }

    #[test]
    fn problems_become_kinds_and_words() {
        let p: Problem = serde_json::from_str(
            r#"{"type": "urn:ietf:params:acme:error:rateLimited", "detail": "too many certificates", "status": 429}"#,
        )
        .unwrap();
        assert_eq!(problem_kind(&p), AcmeErrorKind::RateLimited);
        assert_eq!(problem_words(&p), "too many certificates (rateLimited)");
        let f = Failed::from_acme("ordering a certificate", instant_acme::Error::Api(p));
        assert_eq!(f.kind, AcmeErrorKind::RateLimited);
        assert_eq!(
            f.message,
            "ordering a certificate: the CA refused: too many certificates (rateLimited)"
        );
        let f = Failed::from_acme(
            "reading the ACME directory https://ca.example/dir",
            instant_acme::Error::Other("connection refused".into()),
        );
        assert_eq!(f.kind, AcmeErrorKind::Network);
        assert_eq!(
            f.message,
            "reading the ACME directory https://ca.example/dir: the CA could not be reached: connection refused"
        );
        for (t, k) in [
            ("rejectedIdentifier", AcmeErrorKind::Rejected),
            ("incorrectResponse", AcmeErrorKind::Challenge),
            ("externalAccountRequired", AcmeErrorKind::Account),
            ("serverInternal", AcmeErrorKind::Other),
        ] {
            let p: Problem =
                serde_json::from_str(&format!(r#"{{"type": "urn:ietf:params:acme:error:{t}"}}"#))
                    .unwrap();
            assert_eq!(problem_kind(&p), k, "{t}");
        }
    }

    fn acme(listen_http: Option<&str>) -> AcmeConfig {
        AcmeConfig {
            domains: vec!["scim.example.com".into()],
            email: None,
            directory: crate::config::LETS_ENCRYPT.into(),
            ca_file: None,
            http_listen: listen_http.map(|a| a.parse().unwrap()),
            eab: None,
        }
    }

    #[test]
    fn ports_other_than_443_and_80_are_warned_about() {
        let on = |a: &str| a.parse::<SocketAddr>().unwrap();
        assert!(port_warnings(on("0.0.0.0:443"), &acme(None)).is_empty());
        let w = port_warnings(on("0.0.0.0:8443"), &acme(None));
        assert!(
            w[0].contains("443") && w[0].contains("8443") && w[0].contains("forwarded"),
            "{w:?}"
        );
        assert!(port_warnings(on("0.0.0.0:8443"), &acme(Some("0.0.0.0:80"))).is_empty());
        let w = port_warnings(on("0.0.0.0:8443"), &acme(Some("0.0.0.0:8080")));
        assert!(w[0].contains("port 80") && w[0].contains("8080"), "{w:?}");
    }

    #[test]
    fn eab_keys_are_base64url() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("hmac");
        std::fs::write(
            &p,
            "zWNDZM6eQGHWpSRTPal5eIUYFTu7EajVIoguysqZ9wG44nMEtx3MUAsUDkMTQ12W\n",
        )
        .unwrap();
        assert_eq!(eab_key(&p).unwrap().len(), 48);
        std::fs::write(&p, "not base64 !").unwrap();
        assert!(eab_key(&p).unwrap_err().to_string().contains("base64url"));
    }
}
