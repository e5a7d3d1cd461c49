//! Configuration: defaults, then the TOML file, then `SCIMBRIDGE_*` environment
//! variables, then command-line flags, validated once into one `Config`. The rest of
//! the program never reads the environment.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde::Deserialize;

use crate::secret::Secret;

/// How the listener speaks TLS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TlsMode {
    /// A certificate generated on first start and kept in the data directory.
    SelfSigned,
    /// Certificate chain and private key from PEM files.
    Files { cert: PathBuf, key: PathBuf },
    /// A certificate obtained and renewed from an ACME CA (RFC 8555).
    Acme(AcmeConfig),
    /// Plain HTTP, for running behind a TLS-terminating reverse proxy.
    Off,
}

/// ACME mode, validated (`[tls.acme]`, `--acme-*`, `SCIMBRIDGE_ACME_*`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AcmeConfig {
    /// The DNS names the certificate is for (lowercase, no wildcards: TLS-ALPN-01 and
    /// HTTP-01 cannot validate them, RFC 8555 §7.1.3).
    pub domains: Vec<String>,
    /// The account's contact address (the CA writes about expiry and problems).
    pub email: Option<String>,
    /// The CA's directory URL (Let's Encrypt production by default).
    pub directory: String,
    /// PEM CA certificate(s) to trust the directory's HTTPS with (a private CA).
    pub ca_file: Option<PathBuf>,
    /// A plain listener answering HTTP-01 challenges (and redirecting the rest to
    /// https); when set, orders use HTTP-01 instead of TLS-ALPN-01.
    pub http_listen: Option<SocketAddr>,
    /// External Account Binding, for CAs that require it (RFC 8555 §7.3.4).
    pub eab: Option<EabConfig>,
}

/// External Account Binding: the key id and the file holding the base64url HMAC key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EabConfig {
    pub kid: String,
    pub hmac_key_file: PathBuf,
}

/// `[tls.acme]` as written, and the `--acme-*` flags with their `SCIMBRIDGE_ACME_*`
/// variables: each key declared once, for the file (serde) and the command line (clap).
#[derive(Debug, Default, Clone, clap::Args, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AcmeSection {
    /// --tls acme: a DNS name to obtain the certificate for (repeat for more names).
    #[arg(
        long = "acme-domain",
        env = "SCIMBRIDGE_ACME_DOMAINS",
        value_name = "NAME",
        value_delimiter = ','
    )]
    #[serde(default)]
    pub domains: Vec<String>,
    /// --tls acme: contact address for the ACME account, e.g. ops@example.com.
    #[arg(
        long = "acme-email",
        env = "SCIMBRIDGE_ACME_EMAIL",
        value_name = "ADDR"
    )]
    pub email: Option<String>,
    /// --tls acme: the CA's directory URL [default: Let's Encrypt].
    #[arg(
        long = "acme-directory",
        env = "SCIMBRIDGE_ACME_DIRECTORY",
        value_name = "URL"
    )]
    pub directory: Option<String>,
    /// --tls acme: use Let's Encrypt's staging directory (untrusted certificates, for trying out).
    #[arg(
        long = "acme-staging",
        env = "SCIMBRIDGE_ACME_STAGING",
        value_name = "BOOL",
        num_args = 0..=1,
        default_missing_value = "true"
    )]
    pub staging: Option<bool>,
    /// --tls acme: PEM CA certificate(s) to trust the directory's HTTPS with (a private CA).
    #[arg(
        long = "acme-ca-file",
        env = "SCIMBRIDGE_ACME_CA_FILE",
        value_name = "FILE"
    )]
    pub ca_file: Option<PathBuf>,
    /// --tls acme: answer HTTP-01 challenges on this plain-HTTP address (port 80), e.g. 0.0.0.0:80.
    #[arg(
        long = "acme-http-listen",
        env = "SCIMBRIDGE_ACME_HTTP_LISTEN",
        value_name = "ADDR"
    )]
    pub http_listen: Option<String>,
    /// --tls acme: External Account Binding key id, for CAs that need one.
    #[arg(
        long = "acme-eab-kid",
        env = "SCIMBRIDGE_ACME_EAB_KID",
        value_name = "KID"
    )]
    pub eab_kid: Option<String>,
    /// --tls acme: file holding the External Account Binding HMAC key (base64url).
    #[arg(
        long = "acme-eab-hmac-key-file",
        env = "SCIMBRIDGE_ACME_EAB_HMAC_KEY_FILE",
        value_name = "FILE"
    )]
    pub eab_hmac_key_file: Option<PathBuf>,
}

impl AcmeSection {
    /// Each value set here replaces the one in `file`.
    fn over(self, file: AcmeSection) -> AcmeSection {
        AcmeSection {
            domains: if self.domains.is_empty() {
                file.domains
            } else {
                self.domains
            },
            email: self.email.or(file.email),
            directory: self.directory.or(file.directory),
            staging: self.staging.or(file.staging),
            ca_file: self.ca_file.or(file.ca_file),
            http_listen: self.http_listen.or(file.http_listen),
            eab_kid: self.eab_kid.or(file.eab_kid),
            eab_hmac_key_file: self.eab_hmac_key_file.or(file.eab_hmac_key_file),
        }
    }

    fn validate(self, listen: SocketAddr, origin: &dyn Fn(&str) -> String) -> Result<AcmeConfig> {
        if self.domains.is_empty() {
            bail!(
                "{}: tls mode \"acme\" needs the names to obtain a certificate for: set tls.acme.domains \
                 (or --acme-domain scim.example.com)",
                origin("tls.acme.domains")
            );
        }
        let mut domains = Vec::new();
        for d in self.domains {
            let d = d.trim().trim_end_matches('.').to_ascii_lowercase();
            if let Some(why) = dns_name_fault(&d) {
                bail!("{}: \"{d}\" {why}", origin("tls.acme.domains"));
            }
            if !domains.contains(&d) {
                domains.push(d);
            }
        }
        if let Some(e) = &self.email {
            if !e.contains('@') || e.contains(char::is_whitespace) || e.starts_with("mailto:") {
                bail!(
                    "{}: \"{e}\" is not an address like ops@example.com",
                    origin("tls.acme.email")
                );
            }
        }
        let directory = match (self.directory, self.staging.unwrap_or(false)) {
            (Some(_), true) => bail!(
                "{}: give either a directory URL or staging = true, not both",
                origin("tls.acme.staging")
            ),
            (Some(d), false) => {
                if !d.starts_with("https://") {
                    bail!(
                        "{}: \"{d}\" must be an https:// URL (RFC 8555 §6.1)",
                        origin("tls.acme.directory")
                    );
                }
                d
            }
            (None, true) => LETS_ENCRYPT_STAGING.to_owned(),
            (None, false) => LETS_ENCRYPT.to_owned(),
        };
        let http_listen = match self.http_listen {
            Some(l) => {
                let addr: SocketAddr = l.parse().with_context(|| {
                    format!(
                        "{}: \"{l}\" is not an address like 0.0.0.0:80",
                        origin("tls.acme.http_listen")
                    )
                })?;
                if addr == listen && addr.port() != 0 {
                    bail!(
                        "{}: {addr} is also the SCIM listener; HTTP-01 needs its own plain listener (port 80)",
                        origin("tls.acme.http_listen")
                    );
                }
                Some(addr)
            }
            None => None,
        };
        let eab = match (self.eab_kid, self.eab_hmac_key_file) {
            (Some(kid), Some(hmac_key_file)) => Some(EabConfig { kid, hmac_key_file }),
            (None, None) => None,
            _ => bail!(
                "{}: External Account Binding needs both eab_kid and eab_hmac_key_file",
                origin("tls.acme.eab_kid")
            ),
        };
        Ok(AcmeConfig {
            domains,
            email: self.email,
            directory,
            ca_file: self.ca_file,
            http_listen,
            eab,
        })
    }
}

/// Why `name` cannot be validated by TLS-ALPN-01 or HTTP-01, if it cannot.
fn dns_name_fault(name: &str) -> Option<&'static str> {
    if name.starts_with("*.") {
        return Some("is a wildcard; TLS-ALPN-01 and HTTP-01 cannot validate wildcards");
    }
    if name.parse::<std::net::IpAddr>().is_ok() {
        return Some("is an IP address; give the DNS name identity providers connect to");
    }
    let ok_label = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
    };
    if name.is_empty() || name.len() > 253 || !name.split('.').all(ok_label) {
        return Some("is not a DNS name like scim.example.com");
    }
    None
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Human,
    Json,
}

/// Bounds on what one client can make the server do (`[limits]`; docs/SECURITY.md
/// lists them with their defaults).
#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest request body accepted (bytes); larger ones answer 413.
    pub max_body_bytes: usize,
    /// Connections served at once; further ones wait in the accept queue (and idle
    /// connections are closed to make room).
    pub max_connections: usize,
    /// Connections open at once from one client address (IPv6: one /64); more are
    /// closed at accept. Trusted proxies are exempt.
    pub max_connections_per_address: usize,
    /// Time allowed for a TLS handshake, for the first request to start, and for
    /// reading each HTTP/1.1 request head.
    pub handshake_timeout: Duration,
    /// Time allowed for a whole request body to arrive (408 after).
    pub body_timeout: Duration,
    /// A connection with no request in progress for this long is closed.
    pub idle_timeout: Duration,
    /// A connection whose peer does not read must still move `min_send_rate` bytes
    /// per second averaged over this window, or it is closed.
    pub write_timeout: Duration,
    /// Bytes per second (see `write_timeout`).
    pub min_send_rate: u64,
    /// HTTP/2 streams open at once per connection.
    pub http2_max_streams: u32,
    /// Concurrent and heavy work per token and per address, failed authentications.
    pub limiter: crate::limiter::LimiterConfig,
    /// Page size when a list request gives no `count`.
    pub default_page_size: usize,
    /// Largest page a list request can get.
    pub max_page_size: usize,
    /// Most operations in one bulk request (more answer 413 tooMany).
    pub bulk_max_operations: usize,
    /// Largest bulk request body in bytes.
    pub bulk_max_payload_bytes: usize,
    /// Longest string value in a request, in bytes (a userName, an email...); longer
    /// ones answer 400 invalidValue.
    pub max_value_bytes: usize,
    /// Most values one attribute may carry in one request operation (a POST or PUT
    /// body, one PATCH operation, one Bulk operation). Not a bound on what is stored:
    /// a group's members can grow past it over several requests.
    pub max_values_per_operation: usize,
}

impl Limits {
    /// The largest request body any endpoint accepts.
    pub fn max_request_bytes(&self) -> usize {
        self.max_body_bytes.max(self.bulk_max_payload_bytes)
    }
}

/// Addresses and networks of reverse proxies whose `X-Forwarded-For` is believed
/// (`trusted_proxies`, e.g. `["127.0.0.1", "10.0.0.0/8"]`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies(Vec<(IpAddr, u8)>);

impl TrustedProxies {
    /// Parses `ADDRESS` or `ADDRESS/PREFIX`.
    pub fn parse(entries: &[String]) -> std::result::Result<TrustedProxies, String> {
        let mut out = Vec::new();
        for e in entries {
            let (addr, prefix) = match e.split_once('/') {
                Some((a, p)) => (a, Some(p)),
                None => (e.as_str(), None),
            };
            let addr: IpAddr = addr
                .trim()
                .parse()
                .map_err(|_| format!("\"{e}\" is not an address like 10.0.0.1 or 10.0.0.0/8"))?;
            let max = if addr.is_ipv4() { 32 } else { 128 };
            let prefix = match prefix {
                None => max,
                Some(p) => match p.trim().parse::<u8>() {
                    Ok(p) if p <= max => p,
                    _ => return Err(format!("\"{e}\": the prefix length must be 0 to {max}")),
                },
            };
            out.push((addr, prefix));
        }
        Ok(TrustedProxies(out))
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        self.0.iter().any(|(net, prefix)| match (net, ip) {
            (IpAddr::V4(n), IpAddr::V4(a)) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(*prefix)).unwrap_or(0);
                u32::from(*n) & mask == u32::from(a) & mask
            }
            (IpAddr::V6(n), IpAddr::V6(a)) => {
                let mask = u128::MAX.checked_shl(128 - u32::from(*prefix)).unwrap_or(0);
                u128::from(*n) & mask == u128::from(a) & mask
            }
            _ => false,
        })
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_body_bytes: 1 << 20,
            max_connections: 512,
            max_connections_per_address: 128,
            handshake_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(60),
            idle_timeout: Duration::from_secs(60),
            write_timeout: Duration::from_secs(30),
            min_send_rate: 1024,
            http2_max_streams: 64,
            limiter: crate::limiter::LimiterConfig::default(),
            default_page_size: 100,
            max_page_size: 1000,
            bulk_max_operations: 1000,
            bulk_max_payload_bytes: 4 << 20,
            max_value_bytes: 32 << 10,
            max_values_per_operation: 20_000,
        }
    }
}

impl Limits {
    /// The bounds on one request operation, for the SCIM core.
    pub fn request(&self) -> crate::scim::resource::RequestLimits {
        crate::scim::resource::RequestLimits {
            max_value_bytes: self.max_value_bytes,
            max_values: self.max_values_per_operation,
        }
    }
}

/// How the SCIM core treats what clients send (`[scim]`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ScimConfig {
    /// Attributes no schema defines: refused (default) or dropped, counted and shown.
    pub unknown_attributes: crate::scim::resource::UnknownAttributes,
    /// Schema extensions the admin declared, published and stored like the built-in
    /// ones.
    pub extensions: Vec<crate::scim::schema::ExtensionDecl>,
}

/// The validated configuration of one run.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where the database, the generated certificate and the control socket live.
    pub data_dir: PathBuf,
    /// Address of the SCIM listener.
    pub listen: SocketAddr,
    /// The externally visible base URL (e.g. `https://scim.example.com`), used in
    /// `meta.location` and the logged SCIM URL; derived from the Host header if unset.
    pub public_url: Option<String>,
    pub tls: TlsMode,
    pub log_format: LogFormat,
    pub limits: Limits,
    /// redb page cache size in bytes.
    pub cache_bytes: usize,
    /// When set, `/metrics` requires `Authorization: Bearer <this>`.
    pub metrics_token: Option<Secret>,
    /// What `migrate check` enforces.
    pub migration: MigrationPolicy,
    /// The built-in admin page.
    pub admin: AdminConfig,
    /// Unknown attributes and declared schema extensions.
    pub scim: ScimConfig,
    /// Reverse proxies whose `X-Forwarded-For` names the client.
    pub trusted_proxies: TrustedProxies,
}

/// Where and whether the admin page (`/admin`) is served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminConfig {
    /// Off: `/admin` answers 404 everywhere.
    pub enabled: bool,
    /// A separate listener for the admin page (same TLS as the SCIM listener); when
    /// set, `/admin` on the SCIM listener answers 404.
    pub listen: Option<SocketAddr>,
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig {
            enabled: true,
            listen: None,
        }
    }
}

/// Free and consumer mail providers: accounts there are personal, not the
/// organisation's, and hosted provisioning cannot verify the domain.
pub const DEFAULT_PUBLIC_DOMAINS: &[&str] = &[
    "gmail.com",
    "googlemail.com",
    "outlook.com",
    "hotmail.com",
    "hotmail.co.uk",
    "live.com",
    "msn.com",
    "yahoo.com",
    "yahoo.co.uk",
    "yahoo.fr",
    "ymail.com",
    "rocketmail.com",
    "aol.com",
    "icloud.com",
    "me.com",
    "mac.com",
    "proton.me",
    "protonmail.com",
    "pm.me",
    "gmx.com",
    "gmx.de",
    "gmx.net",
    "web.de",
    "mail.com",
    "yandex.com",
    "yandex.ru",
    "mail.ru",
    "zoho.com",
    "qq.com",
    "163.com",
    "126.com",
    "tutanota.com",
    "fastmail.com",
    "hey.com",
];

/// Groups that hosted provisioning typically refuses to manage because they grant
/// account recovery or administration of all groups.
pub const DEFAULT_PROTECTED_GROUPS: &[&str] = &["Owners", "Administrators"];

/// What `migrate check` looks for (`[migration]` in the configuration).
#[derive(Debug, Clone)]
pub struct MigrationPolicy {
    /// Email domains the hosted service accepts (lowercase). Empty: not configured.
    pub allowed_domains: Vec<String>,
    pub public_domains: Vec<String>,
    pub protected_groups: Vec<String>,
}

impl Default for MigrationPolicy {
    fn default() -> Self {
        MigrationPolicy {
            allowed_domains: Vec::new(),
            public_domains: DEFAULT_PUBLIC_DOMAINS
                .iter()
                .map(|s| s.to_string())
                .collect(),
            protected_groups: DEFAULT_PROTECTED_GROUPS
                .iter()
                .map(|s| s.to_string())
                .collect(),
        }
    }
}

pub const DEFAULT_DATA_DIR: &str = "./scimbridge-data";
/// Let's Encrypt's production ACME directory, the default of `tls.acme.directory`.
pub const LETS_ENCRYPT: &str = "https://acme-v02.api.letsencrypt.org/directory";
/// Let's Encrypt's staging directory (`--acme-staging`): untrusted certificates, high limits.
pub const LETS_ENCRYPT_STAGING: &str = "https://acme-staging-v02.api.letsencrypt.org/directory";
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8443";

impl Default for Config {
    fn default() -> Self {
        Config {
            data_dir: PathBuf::from(DEFAULT_DATA_DIR),
            listen: DEFAULT_LISTEN
                .parse()
                .unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 8443))),
            public_url: None,
            tls: TlsMode::SelfSigned,
            log_format: LogFormat::Human,
            limits: Limits::default(),
            cache_bytes: 64 << 20,
            metrics_token: None,
            migration: MigrationPolicy::default(),
            admin: AdminConfig::default(),
            scim: ScimConfig::default(),
            trusted_proxies: TrustedProxies::default(),
        }
    }
}

impl Config {
    pub fn db_path(&self) -> PathBuf {
        self.data_dir.join("scimbridge.redb")
    }

    /// Whether answers carry `Strict-Transport-Security`: only with a certificate a
    /// browser can verify (from files or ACME), never self-signed or without TLS.
    pub fn hsts(&self) -> bool {
        matches!(self.tls, TlsMode::Files { .. } | TlsMode::Acme(_))
    }
}

/// The TOML file, as written by an admin. Unknown keys are errors: a typo must not
/// silently fall back to a default.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub data_dir: Option<PathBuf>,
    pub listen: Option<String>,
    pub public_url: Option<String>,
    pub log_format: Option<String>,
    pub tls: Option<FileTls>,
    pub limits: Option<FileLimits>,
    pub storage: Option<FileStorage>,
    pub metrics: Option<FileMetrics>,
    pub migration: Option<FileMigration>,
    pub admin: Option<FileAdmin>,
    pub scim: Option<FileScim>,
    pub trusted_proxies: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileScim {
    pub unknown_attributes: Option<String>,
    pub extensions: Option<Vec<FileExtension>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileExtension {
    pub urn: String,
    pub resource_type: String,
    pub name: Option<String>,
    pub description: Option<String>,
    pub attributes: Vec<FileExtensionAttribute>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileExtensionAttribute {
    pub name: String,
    #[serde(rename = "type")]
    pub ty: String,
    #[serde(default)]
    pub multi_valued: bool,
    #[serde(default)]
    pub case_exact: bool,
    #[serde(default)]
    pub required: bool,
    pub description: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileAdmin {
    pub enabled: Option<bool>,
    pub listen: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileMigration {
    pub allowed_domains: Option<Vec<String>>,
    pub public_domains: Option<Vec<String>>,
    pub protected_groups: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileMetrics {
    pub token: Option<Secret>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileTls {
    pub mode: Option<String>,
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    pub acme: Option<AcmeSection>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileLimits {
    pub max_body_bytes: Option<usize>,
    pub max_connections: Option<usize>,
    pub max_connections_per_address: Option<usize>,
    pub handshake_timeout_secs: Option<u64>,
    pub body_timeout_secs: Option<u64>,
    pub idle_timeout_secs: Option<u64>,
    pub write_timeout_secs: Option<u64>,
    pub min_send_rate: Option<u64>,
    pub http2_max_streams: Option<u32>,
    pub token_requests: Option<usize>,
    pub token_heavy: Option<usize>,
    pub address_requests: Option<usize>,
    pub address_heavy: Option<usize>,
    pub heavy_slots: Option<usize>,
    pub auth_failures: Option<u32>,
    pub auth_failure_window_secs: Option<u64>,
    pub default_page_size: Option<usize>,
    pub max_page_size: Option<usize>,
    pub bulk_max_operations: Option<usize>,
    pub bulk_max_payload_bytes: Option<usize>,
    pub max_value_bytes: Option<usize>,
    pub max_values_per_operation: Option<usize>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileStorage {
    pub cache_mb: Option<usize>,
}

/// Values given on the command line or in `SCIMBRIDGE_*` variables (clap merges
/// those two, flags winning); each overrides the file.
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    pub data_dir: Option<PathBuf>,
    pub listen: Option<String>,
    pub public_url: Option<String>,
    pub tls: Option<String>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    pub log_format: Option<String>,
    pub metrics_token: Option<Secret>,
    pub admin_listen: Option<String>,
    pub admin_enabled: Option<bool>,
    pub acme: AcmeSection,
}

pub fn read_file(path: &Path) -> Result<FileConfig> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the config file {}", path.display()))?;
    toml::from_str(&text)
        .map_err(|e| anyhow::anyhow!("{}: {}", path.display(), e.to_string().trim_end()))
}

/// Builds the configuration from an optional file and the overrides.
pub fn load(file: Option<&Path>, o: &Overrides) -> Result<Config> {
    let f = match file {
        Some(p) => read_file(p)?,
        None => FileConfig::default(),
    };
    let origin = |key: &str| match file {
        Some(p) => format!("{} (key {key})", p.display()),
        None => key.to_owned(),
    };
    let mut c = Config::default();
    if let Some(d) = o.data_dir.clone().or(f.data_dir) {
        c.data_dir = d;
    }
    if let Some(l) = o.listen.clone().or(f.listen) {
        c.listen = l.parse().with_context(|| {
            format!(
                "{}: \"{l}\" is not an address like 127.0.0.1:8443 or [::]:8443",
                origin("listen")
            )
        })?;
    }
    if let Some(u) = o.public_url.clone().or(f.public_url) {
        let u = u.trim_end_matches('/').to_owned();
        if !(u.starts_with("https://") || u.starts_with("http://")) {
            bail!(
                "{}: \"{u}\" must start with https:// (or http://)",
                origin("public_url")
            );
        }
        c.public_url = Some(u);
    }
    if let Some(l) = o.log_format.clone().or(f.log_format) {
        c.log_format = match l.as_str() {
            "human" => LogFormat::Human,
            "json" => LogFormat::Json,
            other => bail!(
                "{}: \"{other}\" is not one of human, json",
                origin("log_format")
            ),
        };
    }
    let ft = f.tls.unwrap_or_default();
    let mode = o
        .tls
        .clone()
        .or(ft.mode)
        .unwrap_or_else(|| "self-signed".into());
    let cert = o.tls_cert.clone().or(ft.cert);
    let key = o.tls_key.clone().or(ft.key);
    c.tls = match mode.as_str() {
        "self-signed" => TlsMode::SelfSigned,
        "off" => TlsMode::Off,
        "acme" => TlsMode::Acme(
            o.acme
                .clone()
                .over(ft.acme.unwrap_or_default())
                .validate(c.listen, &origin)?,
        ),
        "files" => match (cert, key) {
            (Some(cert), Some(key)) => TlsMode::Files { cert, key },
            _ => bail!(
                "{}: tls mode \"files\" needs both a certificate and a key: set tls.cert and tls.key \
                 (or --tls-cert and --tls-key), or use --tls self-signed",
                origin("tls.mode")
            ),
        },
        other => bail!("{}: \"{other}\" is not one of self-signed, files, acme, off", origin("tls.mode")),
    };
    if let Some(l) = f.limits {
        let d = Limits::default();
        let secs = |v: Option<u64>, key: &str, default: Duration| -> Result<Duration> {
            match v {
                Some(0) => bail!("{}: must be at least 1", origin(&format!("limits.{key}"))),
                Some(s) => Ok(Duration::from_secs(s)),
                None => Ok(default),
            }
        };
        let at_least_one = |v: Option<usize>, key: &str, default: usize| -> Result<usize> {
            match v {
                Some(0) => bail!("{}: must be at least 1", origin(&format!("limits.{key}"))),
                Some(n) => Ok(n),
                None => Ok(default),
            }
        };
        let dl = &d.limiter;
        let limiter = crate::limiter::LimiterConfig {
            token_requests: at_least_one(l.token_requests, "token_requests", dl.token_requests)?,
            token_heavy: at_least_one(l.token_heavy, "token_heavy", dl.token_heavy)?,
            address_requests: at_least_one(
                l.address_requests,
                "address_requests",
                dl.address_requests,
            )?,
            address_heavy: at_least_one(l.address_heavy, "address_heavy", dl.address_heavy)?,
            heavy_slots: at_least_one(l.heavy_slots, "heavy_slots", dl.heavy_slots)?,
            auth_failures: at_least_one(
                l.auth_failures.map(|n| n as usize),
                "auth_failures",
                dl.auth_failures as usize,
            )? as u32,
            auth_failure_window: secs(
                l.auth_failure_window_secs,
                "auth_failure_window_secs",
                dl.auth_failure_window,
            )?,
        };
        c.limits = Limits {
            max_body_bytes: l.max_body_bytes.unwrap_or(d.max_body_bytes),
            max_connections: l.max_connections.unwrap_or(d.max_connections),
            max_connections_per_address: at_least_one(
                l.max_connections_per_address,
                "max_connections_per_address",
                d.max_connections_per_address,
            )?,
            handshake_timeout: secs(
                l.handshake_timeout_secs,
                "handshake_timeout_secs",
                d.handshake_timeout,
            )?,
            body_timeout: secs(l.body_timeout_secs, "body_timeout_secs", d.body_timeout)?,
            idle_timeout: secs(l.idle_timeout_secs, "idle_timeout_secs", d.idle_timeout)?,
            write_timeout: secs(l.write_timeout_secs, "write_timeout_secs", d.write_timeout)?,
            min_send_rate: l.min_send_rate.unwrap_or(d.min_send_rate),
            http2_max_streams: at_least_one(
                l.http2_max_streams.map(|n| n as usize),
                "http2_max_streams",
                d.http2_max_streams as usize,
            )? as u32,
            limiter,
            default_page_size: l.default_page_size.unwrap_or(d.default_page_size),
            max_page_size: l.max_page_size.unwrap_or(d.max_page_size),
            bulk_max_operations: l.bulk_max_operations.unwrap_or(d.bulk_max_operations),
            bulk_max_payload_bytes: l.bulk_max_payload_bytes.unwrap_or(d.bulk_max_payload_bytes),
            max_value_bytes: l.max_value_bytes.unwrap_or(d.max_value_bytes),
            max_values_per_operation: l
                .max_values_per_operation
                .unwrap_or(d.max_values_per_operation),
        };
        if c.limits.max_value_bytes < 1024 {
            bail!(
                "{}: must be at least 1024",
                origin("limits.max_value_bytes")
            );
        }
        if c.limits.max_values_per_operation < 100 {
            bail!(
                "{}: must be at least 100",
                origin("limits.max_values_per_operation")
            );
        }
        if c.limits.max_body_bytes < 1024 {
            bail!("{}: must be at least 1024", origin("limits.max_body_bytes"));
        }
        if c.limits.max_connections == 0 {
            bail!("{}: must be at least 1", origin("limits.max_connections"));
        }
        if c.limits.max_page_size == 0 || c.limits.default_page_size > c.limits.max_page_size {
            bail!(
                "{}: default_page_size must be at most max_page_size, which must be at least 1",
                origin("limits")
            );
        }
    }
    if let Some(p) = f.trusted_proxies {
        c.trusted_proxies = TrustedProxies::parse(&p)
            .map_err(|e| anyhow::anyhow!("{}: {e}", origin("trusted_proxies")))?;
    }
    if let Some(t) = o.metrics_token.clone().or(f.metrics.and_then(|m| m.token)) {
        if t.len() < 16 {
            bail!(
                "{}: the metrics token must be at least 16 characters",
                origin("metrics.token")
            );
        }
        c.metrics_token = Some(t);
    }
    if let Some(m) = f.migration {
        if let Some(d) = m.allowed_domains {
            for domain in &d {
                if domain.is_empty() || domain.contains('@') || domain.contains(char::is_whitespace)
                {
                    bail!(
                        "{}: \"{domain}\" is not a domain like example.com",
                        origin("migration.allowed_domains")
                    );
                }
            }
            c.migration.allowed_domains = d.into_iter().map(|x| x.to_lowercase()).collect();
        }
        if let Some(d) = m.public_domains {
            c.migration.public_domains = d.into_iter().map(|x| x.to_lowercase()).collect();
        }
        if let Some(g) = m.protected_groups {
            c.migration.protected_groups = g;
        }
    }
    let fa = f.admin.unwrap_or_default();
    if let Some(e) = o.admin_enabled.or(fa.enabled) {
        c.admin.enabled = e;
    }
    if let Some(l) = o.admin_listen.clone().or(fa.listen) {
        let addr: SocketAddr = l.parse().with_context(|| {
            format!(
                "{}: \"{l}\" is not an address like 127.0.0.1:9443",
                origin("admin.listen")
            )
        })?;
        if addr == c.listen && addr.port() != 0 {
            bail!(
                "{}: {addr} is also the SCIM listener; choose another port, or leave admin.listen unset \
                 to serve the admin page on the SCIM listener",
                origin("admin.listen")
            );
        }
        c.admin.listen = Some(addr);
    }
    if let Some(sc) = f.scim {
        if let Some(u) = sc.unknown_attributes {
            c.scim.unknown_attributes = match u.as_str() {
                "reject" => crate::scim::resource::UnknownAttributes::Reject,
                "drop" => crate::scim::resource::UnknownAttributes::Drop,
                other => bail!(
                    "{}: \"{other}\" is not one of reject, drop",
                    origin("scim.unknown_attributes")
                ),
            };
        }
        for (i, e) in sc.extensions.unwrap_or_default().into_iter().enumerate() {
            c.scim.extensions.push(extension(e).map_err(|why| {
                anyhow::anyhow!("{}: {why}", origin(&format!("scim.extensions[{i}]")))
            })?);
        }
        crate::scim::schema::validate_extensions(&c.scim.extensions)
            .map_err(|why| anyhow::anyhow!("{}: {why}", origin("scim.extensions")))?;
    }
    if let Some(s) = f.storage {
        if let Some(mb) = s.cache_mb {
            if mb < 1 {
                bail!("{}: must be at least 1", origin("storage.cache_mb"));
            }
            c.cache_bytes = mb << 20;
        }
    }
    Ok(c)
}

/// A `[[scim.extensions]]` table as the core's declaration.
fn extension(e: FileExtension) -> std::result::Result<crate::scim::schema::ExtensionDecl, String> {
    use crate::scim::schema::{AttrDecl, AttrType, ExtensionDecl, ResourceType};
    let resource_type = match e.resource_type.as_str() {
        "User" => ResourceType::User,
        "Group" => ResourceType::Group,
        other => return Err(format!("resource_type \"{other}\" is not User or Group")),
    };
    let mut attributes = Vec::with_capacity(e.attributes.len());
    for a in e.attributes {
        let ty = AttrType::from_declared(&a.ty)
            .map_err(|why| format!("attribute \"{}\": {why}", a.name))?;
        attributes.push(AttrDecl {
            name: a.name,
            ty,
            multi_valued: a.multi_valued,
            case_exact: a.case_exact,
            required: a.required,
            description: a.description,
        });
    }
    Ok(ExtensionDecl {
        urn: e.urn,
        resource_type,
        name: e.name,
        description: e.description,
        attributes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(text: &str) -> (tempfile::TempDir, PathBuf) {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("c.toml");
        std::fs::write(&p, text).unwrap();
        (d, p)
    }

    #[test]
    fn example_config_is_valid_and_matches_defaults() {
        let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/scimbridge.toml");
        let c = load(Some(&p), &Overrides::default()).unwrap();
        let d = Config::default();
        assert_eq!((c.listen, c.data_dir, c.tls), (d.listen, d.data_dir, d.tls));
        assert_eq!(c.limits.max_body_bytes, d.limits.max_body_bytes);
        assert_eq!(c.cache_bytes, d.cache_bytes);
        assert_eq!(c.admin, d.admin);
    }

    #[test]
    fn admin_listener_and_switch() {
        let (_d, p) = write("[admin]\nenabled = false\nlisten = \"127.0.0.1:9443\"\n");
        let c = load(Some(&p), &Overrides::default()).unwrap();
        assert!(!c.admin.enabled);
        assert_eq!(c.admin.listen.unwrap().port(), 9443);
        let o = Overrides {
            admin_listen: Some("127.0.0.1:9444".into()),
            admin_enabled: Some(true),
            ..Default::default()
        };
        let c = load(Some(&p), &o).unwrap();
        assert!(c.admin.enabled);
        assert_eq!(c.admin.listen.unwrap().port(), 9444);
        let o = Overrides {
            admin_listen: Some("127.0.0.1:8443".into()),
            ..Default::default()
        };
        let e = load(None, &o).unwrap_err().to_string();
        assert!(e.contains("admin.listen"), "{e}");
    }

    #[test]
    fn scim_section_declares_extensions_and_the_unknown_attribute_policy() {
        let (_d, p) = write(
            "[scim]\nunknown_attributes = \"drop\"\n\
             [[scim.extensions]]\n\
             urn = \"urn:ietf:params:scim:schemas:extension:acme:2.0:User\"\n\
             resource_type = \"User\"\n\
             attributes = [ { name = \"badge\", type = \"string\" },\n\
                            { name = \"floors\", type = \"integer\", multi_valued = true } ]\n",
        );
        let c = load(Some(&p), &Overrides::default()).unwrap();
        assert_eq!(
            c.scim.unknown_attributes,
            crate::scim::resource::UnknownAttributes::Drop
        );
        assert_eq!(c.scim.extensions.len(), 1);
        let attrs = &c.scim.extensions[0].attributes;
        assert_eq!(
            (attrs[1].name.as_str(), attrs[1].multi_valued),
            ("floors", true)
        );
        assert_eq!(
            Config::default().scim.unknown_attributes,
            crate::scim::resource::UnknownAttributes::Reject
        );
        for (bad, why) in [
            ("[scim]\nunknown_attributes = \"keep\"\n", "reject, drop"),
            (
                "[[scim.extensions]]\nurn = \"urn:x:2.0:User\"\nresource_type = \"Usr\"\nattributes = []\n",
                "User or Group",
            ),
            (
                "[[scim.extensions]]\nurn = \"urn:x:2.0:User\"\nresource_type = \"User\"\n\
                 attributes = [ { name = \"a\", type = \"complex\" } ]\n",
                "sub-attribute",
            ),
        ] {
            let (_d, p) = write(bad);
            let e = load(Some(&p), &Overrides::default()).unwrap_err().to_string();
            assert!(e.contains(why) && e.contains("scim"), "{bad}: {e}");
        }
    }

    #[test]
    fn limits_and_trusted_proxies() {
        let (_d, p) = write(
            "trusted_proxies = [\"127.0.0.1\", \"10.0.0.0/8\", \"2001:db8::/32\"]\n\
             [limits]\ntoken_requests = 100\nidle_timeout_secs = 5\nauth_failures = 3\n",
        );
        let c = load(Some(&p), &Overrides::default()).unwrap();
        assert_eq!(c.limits.limiter.token_requests, 100);
        assert_eq!(c.limits.idle_timeout, Duration::from_secs(5));
        assert_eq!(c.limits.limiter.auth_failures, 3);
        let t = &c.trusted_proxies;
        assert!(t.contains("127.0.0.1".parse().unwrap()));
        assert!(t.contains("::ffff:127.0.0.1".parse().unwrap()));
        assert!(t.contains("10.200.3.4".parse().unwrap()));
        assert!(!t.contains("11.0.0.1".parse().unwrap()));
        assert!(t.contains("2001:db8:ffff::1".parse().unwrap()));
        assert!(!t.contains("2001:db9::1".parse().unwrap()));
        for bad in [
            "trusted_proxies = [\"10.0.0.0/33\"]\n",
            "trusted_proxies = [\"proxy.example\"]\n",
            "[limits]\nidle_timeout_secs = 0\n",
            "[limits]\ntoken_requests = 0\n",
        ] {
            let (_d, p) = write(bad);
            let e = load(Some(&p), &Overrides::default())
                .unwrap_err()
                .to_string();
            assert!(
                e.contains("trusted_proxies") || e.contains("limits."),
                "{e}"
            );
        }
    }

    #[test]
    fn defaults() {
        let c = load(None, &Overrides::default()).unwrap();
        assert_eq!(c.listen.to_string(), "127.0.0.1:8443");
        assert_eq!(c.tls, TlsMode::SelfSigned);
        assert_eq!(c.data_dir, PathBuf::from("./scimbridge-data"));
    }

    #[test]
    fn flags_override_file() {
        let (_d, p) =
            write("listen = \"127.0.0.1:9000\"\ndata_dir = \"/x\"\n[tls]\nmode = \"off\"\n");
        let o = Overrides {
            listen: Some("127.0.0.1:9001".into()),
            ..Default::default()
        };
        let c = load(Some(&p), &o).unwrap();
        assert_eq!(c.listen.port(), 9001);
        assert_eq!(c.data_dir, PathBuf::from("/x"));
        assert_eq!(c.tls, TlsMode::Off);
    }

    #[test]
    fn unknown_key_names_file_and_key() {
        let (_d, p) = write("lissen = \"x\"\n");
        let e = load(Some(&p), &Overrides::default())
            .unwrap_err()
            .to_string();
        assert!(e.contains("c.toml") && e.contains("lissen"), "{e}");
    }

    #[test]
    fn bad_values_are_explained() {
        let (_d, p) = write("listen = \"nope\"\n");
        let e = load(Some(&p), &Overrides::default())
            .unwrap_err()
            .to_string();
        assert!(e.contains("listen") && e.contains("nope"), "{e}");
        let o = Overrides {
            tls: Some("files".into()),
            ..Default::default()
        };
        let e = load(None, &o).unwrap_err().to_string();
        assert!(e.contains("tls.cert"), "{e}");
    }

    #[test]
    fn acme_from_the_file_and_the_flags() {
        let (_d, p) = write(
            "[tls]\nmode = \"acme\"\n[tls.acme]\ndomains = [\"Scim.Example.com\"]\nemail = \"ops@example.com\"\n\
             staging = true\nhttp_listen = \"0.0.0.0:80\"\n",
        );
        let c = load(Some(&p), &Overrides::default()).unwrap();
        let TlsMode::Acme(a) = c.tls else {
            panic!("not acme: {:?}", c.tls)
        };
        assert_eq!(a.domains, ["scim.example.com"]);
        assert_eq!(a.directory, LETS_ENCRYPT_STAGING);
        assert_eq!(a.http_listen.unwrap().port(), 80);
        assert_eq!(a.eab, None);
        // Flags replace the file's names and directory.
        let o = Overrides {
            acme: AcmeSection {
                domains: vec!["a.example.com".into(), "b.example.com".into()],
                directory: Some("https://ca.example.com/dir".into()),
                staging: Some(false),
                ..Default::default()
            },
            ..Default::default()
        };
        let TlsMode::Acme(a) = load(Some(&p), &o).unwrap().tls else {
            panic!("not acme")
        };
        assert_eq!(a.domains, ["a.example.com", "b.example.com"]);
        assert_eq!(a.directory, "https://ca.example.com/dir");
        assert_eq!(a.email.as_deref(), Some("ops@example.com"));
    }

    #[test]
    fn acme_mistakes_are_explained() {
        let acme = |extra: &str| {
            let (_d, p) = write(&format!(
                "[tls]\nmode = \"acme\"\n[tls.acme]\ndomains = [\"scim.example.com\"]\n{extra}"
            ));
            load(Some(&p), &Overrides::default())
                .map(|_| ())
                .map_err(|e| e.to_string())
        };
        assert!(acme("").is_ok());
        for (extra, expected) in [
            (
                "staging = true\ndirectory = \"https://x.example/dir\"\n",
                "not both",
            ),
            ("directory = \"http://x.example/dir\"\n", "https://"),
            ("email = \"mailto:ops@example.com\"\n", "ops@example.com"),
            ("eab_kid = \"k\"\n", "eab_hmac_key_file"),
            ("http_listen = \"port 80\"\n", "tls.acme.http_listen"),
            ("domain = \"x\"\n", "domain"),
        ] {
            let e = acme(extra).unwrap_err();
            assert!(e.contains(expected), "{extra}: {e}");
        }
        for (name, expected) in [
            ("*.example.com", "wildcard"),
            ("10.0.0.1", "IP address"),
            ("bad_name.example.com", "not a DNS name"),
            ("-a.example.com", "not a DNS name"),
        ] {
            let (_d, p) = write(&format!(
                "[tls]\nmode = \"acme\"\n[tls.acme]\ndomains = [\"{name}\"]\n"
            ));
            let e = load(Some(&p), &Overrides::default())
                .unwrap_err()
                .to_string();
            assert!(
                e.contains(expected) && e.contains("tls.acme.domains"),
                "{name}: {e}"
            );
        }
    }
}
