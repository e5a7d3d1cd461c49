//! Configuration: defaults, then the TOML file, then `SCIMBRIDGE_*` environment
//! variables, then command-line flags, validated once into one `Config`. Each key is
//! declared once, as a field of its section's struct: the field's clap attributes give
//! its flag and environment variable, its serde name is the file key. Sections
//! without flags (`[limits]`, `[storage]`, `[migration]`) deserialize straight into
//! the structs the program uses. The layering is clap's own: the file's values are
//! loaded first and `update_from_arg_matches` replaces exactly the keys given by a
//! flag or a variable. Secrets come from the file or the environment, never from a
//! flag. The rest of the program never reads the environment.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};
use serde::Deserialize;

use crate::secret::Secret;

pub(crate) const DEFAULT_DATA_DIR: &str = "./scimbridge-data";
pub(crate) const DEFAULT_LISTEN: &str = "127.0.0.1:8443";
/// Let's Encrypt's production ACME directory, the default of `tls.acme.directory`.
pub(crate) const LETS_ENCRYPT: &str = "https://acme-v02.api.letsencrypt.org/directory";
/// Let's Encrypt's staging directory (`--acme-staging`): untrusted certificates, high limits.
pub(crate) const LETS_ENCRYPT_STAGING: &str =
    "https://acme-staging-v02.api.letsencrypt.org/directory";

/// The only setting that comes from the environment alone: a flag would show it in
/// `ps`.
const METRICS_TOKEN_ENV: &str = "SCIMBRIDGE_METRICS_TOKEN";

/// Every key, as the file, the environment and the flags give it (all optional; the
/// defaults are applied by `validate`). The root of the TOML file.
#[derive(Debug, Default, Clone, Args, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Settings {
    /// Directory holding the database and the generated certificate
    /// [default: ./scimbridge-data]. Its flag is the global `--data-dir`
    /// (`SCIMBRIDGE_DATA_DIR`), which every command takes.
    #[arg(skip)]
    pub data_dir: Option<PathBuf>,
    /// Address of the SCIM listener [default: 127.0.0.1:8443].
    #[arg(long, env = "SCIMBRIDGE_LISTEN", value_name = "ADDR")]
    pub listen: Option<String>,
    #[command(flatten)]
    #[serde(default)]
    pub tls: TlsSettings,
    /// Externally visible base URL, e.g. https://scim.example.com (used in resource locations).
    #[arg(long, env = "SCIMBRIDGE_PUBLIC_URL", value_name = "URL")]
    pub public_url: Option<String>,
    /// human or json.
    #[arg(long, env = "SCIMBRIDGE_LOG_FORMAT", value_name = "FORMAT")]
    pub log_format: Option<LogFormat>,
    #[command(flatten)]
    #[serde(default)]
    pub admin: AdminSettings,
    /// `[metrics]`.
    #[arg(skip)]
    #[serde(default)]
    pub metrics: MetricsSettings,
    /// `[limits]`.
    #[arg(skip)]
    #[serde(default)]
    pub limits: Limits,
    /// `[storage]`.
    #[arg(skip)]
    #[serde(default)]
    pub storage: Storage,
    /// `[migration]`: what `migrate check` enforces.
    #[arg(skip)]
    #[serde(default)]
    pub migration: MigrationPolicy,
    /// Reverse proxies whose `X-Forwarded-For` names the client, e.g.
    /// `["127.0.0.1", "10.0.0.0/8"]`.
    #[arg(skip)]
    #[serde(default)]
    pub trusted_proxies: TrustedProxies,
    /// `[scim]`: unknown attributes and declared schema extensions.
    #[arg(skip)]
    #[serde(default)]
    pub scim: ScimSettings,
    /// The keys a flag or an environment variable gave (not the file): an error in
    /// such a value names the flag or the variable, never the file's key.
    #[arg(skip)]
    #[serde(skip)]
    pub given: Given,
}

/// Which keys came from a flag or an environment variable, and which one
/// (`Settings::apply_command_line`, `apply_environment`).
#[derive(Debug, Default, Clone)]
pub(crate) struct Given(Vec<(&'static str, String)>);

impl Given {
    /// Records that `key` (e.g. `tls.mode`) was given by `source` (`--tls`, or "the
    /// environment variable SCIMBRIDGE_TLS").
    fn set(&mut self, key: &'static str, source: String) {
        self.0.retain(|(k, _)| *k != key);
        self.0.push((key, source));
    }

    /// The flag or variable that gave `key`; `None` when the file (or nothing) did.
    fn source(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, s)| s.as_str())
    }
}

/// The file key of each argument of `Settings` (by its clap id), for `Given`. A
/// unit test checks that every argument is listed.
const ARG_KEYS: &[(&str, &str)] = &[
    ("listen", "listen"),
    ("public_url", "public_url"),
    ("log_format", "log_format"),
    ("tls", "tls.mode"),
    ("tls_cert", "tls.cert"),
    ("tls_key", "tls.key"),
    ("domains", "tls.acme.domains"),
    ("email", "tls.acme.email"),
    ("directory", "tls.acme.directory"),
    ("staging", "tls.acme.staging"),
    ("ca_file", "tls.acme.ca_file"),
    ("http_listen", "tls.acme.http_listen"),
    ("eab_kid", "tls.acme.eab_kid"),
    ("eab_hmac_key_file", "tls.acme.eab_hmac_key_file"),
    ("admin_listen", "admin.listen"),
    ("admin_enabled", "admin.enabled"),
];

impl Settings {
    /// Applies the flags and `SCIMBRIDGE_*` variables in `m` (the matches of `serve`
    /// or `check-config`) over the file's values, and records which keys they gave.
    pub(crate) fn apply_command_line(&mut self, m: &clap::ArgMatches) -> Result<()> {
        use clap::parser::ValueSource;
        use clap::FromArgMatches;
        self.update_from_arg_matches(m)?;
        let cmd = <Settings as Args>::augment_args(clap::Command::new("serve"));
        for arg in cmd.get_arguments() {
            let id = arg.get_id().as_str();
            let Some(&(_, key)) = ARG_KEYS.iter().find(|(a, _)| *a == id) else {
                continue;
            };
            let source = match m.try_get_raw(id).ok().and_then(|_| m.value_source(id)) {
                Some(ValueSource::EnvVariable) => arg
                    .get_env()
                    .map(|v| format!("the environment variable {}", v.to_string_lossy())),
                Some(ValueSource::CommandLine) => arg.get_long().map(|l| format!("--{l}")),
                _ => None,
            };
            if let Some(source) = source {
                self.given.set(key, source);
            }
        }
        Ok(())
    }
}

/// `[scim]` as the file gives it.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ScimSettings {
    /// `reject` (default) or `drop`.
    pub unknown_attributes: Option<String>,
    /// `[[scim.extensions]]`.
    #[serde(default)]
    pub extensions: Vec<ExtensionSettings>,
}

/// One `[[scim.extensions]]` table.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ExtensionSettings {
    pub urn: String,
    /// `User` or `Group`.
    pub resource_type: String,
    pub name: Option<String>,
    pub description: Option<String>,
    pub attributes: Vec<ExtensionAttributeSettings>,
}

/// One attribute of a declared extension (RFC 7643 §7 characteristics).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ExtensionAttributeSettings {
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

/// `[tls]`: how the listener speaks TLS.
#[derive(Debug, Default, Clone, Args, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct TlsSettings {
    /// self-signed (generated on first start), files (--tls-cert/--tls-key), acme (--acme-domain,
    /// a certificate from Let's Encrypt or another ACME CA) or off (behind a TLS proxy).
    #[arg(id = "tls", long = "tls", env = "SCIMBRIDGE_TLS", value_name = "MODE")]
    pub mode: Option<TlsModeName>,
    /// PEM certificate chain for --tls files.
    #[arg(
        id = "tls_cert",
        long = "tls-cert",
        env = "SCIMBRIDGE_TLS_CERT",
        value_name = "FILE"
    )]
    pub cert: Option<PathBuf>,
    /// PEM private key for --tls files.
    #[arg(
        id = "tls_key",
        long = "tls-key",
        env = "SCIMBRIDGE_TLS_KEY",
        value_name = "FILE"
    )]
    pub key: Option<PathBuf>,
    /// `[tls.acme]`.
    #[command(flatten)]
    #[serde(default)]
    pub acme: AcmeSection,
}

/// `[admin]`: where and whether the admin page is served.
#[derive(Debug, Default, Clone, Args, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct AdminSettings {
    /// Serve the admin page on this address instead of the SCIM listener, e.g. 127.0.0.1:9443.
    #[arg(
        id = "admin_listen",
        long = "admin-listen",
        env = "SCIMBRIDGE_ADMIN_LISTEN",
        value_name = "ADDR"
    )]
    pub listen: Option<String>,
    /// Serve the admin page at /admin [default: true].
    #[arg(
        id = "admin_enabled",
        long = "admin-enabled",
        env = "SCIMBRIDGE_ADMIN_ENABLED",
        value_name = "BOOL"
    )]
    pub enabled: Option<bool>,
}

/// `[metrics]`.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct MetricsSettings {
    /// When set, `/metrics` requires `Authorization: Bearer <this>` (at least 16
    /// characters). From the file or `SCIMBRIDGE_METRICS_TOKEN`, never a flag.
    pub token: Option<Secret>,
}

/// `[storage]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct Storage {
    /// redb page cache in MiB (at least 1); unset, it is sized at start from the
    /// database file and the memory the process may use (`memory::budget`,
    /// `store::default_cache_bytes`).
    pub cache_mb: Option<usize>,
    /// Whether a walk over a table (a scan, a deep offset page, an export) has the
    /// kernel read the pages it reaches next ahead of it, into the OS page cache
    /// (`store/readahead.rs`); on by default.
    pub read_ahead: bool,
    /// Change events (the migration mirror's feed) older than this many days are
    /// deleted (at least 1).
    pub events_max_age_days: u64,
    /// At most this many change events are kept, the oldest deleted first (at
    /// least 1000).
    pub events_max_count: u64,
}

impl Default for Storage {
    fn default() -> Self {
        Storage {
            cache_mb: None,
            read_ahead: true,
            events_max_age_days: 400,
            events_max_count: 1_000_000,
        }
    }
}

/// How long change events are kept (issue 11: the `events` table grew without
/// bound); events the migration mirror has not sent are never deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct EventRetention {
    pub max_age: Duration,
    pub max_count: u64,
}

impl Default for EventRetention {
    fn default() -> Self {
        let s = Storage::default();
        EventRetention {
            max_age: Duration::from_secs(s.events_max_age_days * 86_400),
            max_count: s.events_max_count,
        }
    }
}

/// `[tls] mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum TlsModeName {
    /// A certificate generated on first start and kept in the data directory.
    #[default]
    SelfSigned,
    /// Certificate chain and private key from PEM files.
    Files,
    /// A certificate obtained and renewed from an ACME CA (--acme-domain, [tls.acme]).
    Acme,
    /// Plain HTTP, behind a TLS-terminating reverse proxy.
    Off,
}

/// How the listener speaks TLS (the validated `[tls]` section).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum TlsMode {
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
pub(crate) struct AcmeConfig {
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
pub(crate) struct EabConfig {
    pub kid: String,
    pub hmac_key_file: PathBuf,
}

/// `[tls.acme]` as written, and the `--acme-*` flags with their `SCIMBRIDGE_ACME_*`
/// variables: each key declared once, for the file (serde) and the command line (clap).
#[derive(Debug, Default, Clone, clap::Args, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct AcmeSection {
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

/// `log_format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, ValueEnum)]
#[serde(rename_all = "lowercase")]
pub(crate) enum LogFormat {
    #[default]
    Human,
    Json,
}

/// `[limits]`: bounds on what one client can make the server do (docs/SECURITY.md
/// lists them with their defaults). Durations are whole seconds in the file (keys
/// ending in `_secs`); every count is at least 1.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub(crate) struct Limits {
    /// Largest request body accepted (bytes, at least 1024); larger ones answer 413.
    /// The default is Bulk's `maxPayloadSize` (4 MiB): what an IdP may send in one
    /// Bulk request it may send as one PUT, e.g. a 20,000-member group with display
    /// values (1.7 MB, trial 7); memory per request is bounded by Bulk's anyway.
    pub max_body_bytes: usize,
    /// Connections served at once; further ones wait in the accept queue (and idle
    /// connections are closed to make room).
    pub max_connections: usize,
    /// Connections open at once from one client address (IPv6: one /64); more are
    /// closed at accept. Trusted proxies are exempt.
    pub max_connections_per_address: usize,
    /// Time allowed for a TLS handshake, for the first request to start, and for
    /// reading each HTTP/1.1 request head.
    #[serde(rename = "handshake_timeout_secs", deserialize_with = "seconds")]
    pub handshake_timeout: Duration,
    /// Time allowed for a whole request body to arrive (408 after).
    #[serde(rename = "body_timeout_secs", deserialize_with = "seconds")]
    pub body_timeout: Duration,
    /// A connection with no request in progress for this long is closed.
    #[serde(rename = "idle_timeout_secs", deserialize_with = "seconds")]
    pub idle_timeout: Duration,
    /// A connection whose peer does not read must still move `min_send_rate` bytes
    /// per second averaged over this window, or it is closed.
    #[serde(rename = "write_timeout_secs", deserialize_with = "seconds")]
    pub write_timeout: Duration,
    /// Bytes per second (see `write_timeout`).
    pub min_send_rate: u64,
    /// HTTP/2 streams open at once per connection.
    pub http2_max_streams: u32,
    /// Concurrent and heavy work per token and per address, failed authentications
    /// (their keys sit directly in `[limits]`).
    #[serde(flatten)]
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
    /// ones answer 400 invalidValue. At least 1024.
    pub max_value_bytes: usize,
    /// Most values one attribute may carry in one request operation (a POST or PUT
    /// body, one PATCH operation, one Bulk operation). Not a bound on what is stored:
    /// a group's members can grow past it over several requests. At least 100.
    pub max_values_per_operation: usize,
    /// Keys of `[limits]` that no field took (serde cannot refuse unknown keys next
    /// to a flattened struct): `validate` refuses them, so a typo is an error.
    #[serde(flatten)]
    unknown: std::collections::BTreeMap<String, serde::de::IgnoredAny>,
}

impl Limits {
    /// The largest request body any endpoint accepts.
    pub(crate) fn max_request_bytes(&self) -> usize {
        self.max_body_bytes.max(self.bulk_max_payload_bytes)
    }

    /// The bounds on one request operation, for the SCIM core.
    pub(crate) fn request(&self) -> crate::scim::resource::RequestLimits {
        crate::scim::resource::RequestLimits {
            max_value_bytes: self.max_value_bytes,
            max_values: self.max_values_per_operation,
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_body_bytes: 4 << 20,
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
            unknown: Default::default(),
        }
    }
}

/// Addresses and networks of reverse proxies whose `X-Forwarded-For` is believed
/// (`trusted_proxies`, e.g. `["127.0.0.1", "10.0.0.0/8"]`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(try_from = "Vec<String>")]
pub(crate) struct TrustedProxies(Vec<(IpAddr, u8)>);

impl TryFrom<Vec<String>> for TrustedProxies {
    type Error = String;
    fn try_from(entries: Vec<String>) -> std::result::Result<TrustedProxies, String> {
        TrustedProxies::parse(&entries)
    }
}

impl TrustedProxies {
    /// Parses `ADDRESS` or `ADDRESS/PREFIX`.
    pub(crate) fn parse(entries: &[String]) -> std::result::Result<TrustedProxies, String> {
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

    pub(crate) fn contains(&self, ip: IpAddr) -> bool {
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
}

fn seconds<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    u64::deserialize(d).map(Duration::from_secs)
}

/// Free and consumer mail providers: accounts there are personal, not the
/// organisation's, and hosted provisioning cannot verify the domain.
pub(crate) const DEFAULT_PUBLIC_DOMAINS: &[&str] = &[
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
pub(crate) const DEFAULT_PROTECTED_GROUPS: &[&str] = &["Owners", "Administrators"];

/// `[migration]`: what `migrate check` looks for (unset keys keep the defaults).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct MigrationPolicy {
    /// Email domains the hosted service accepts (lowercase). Empty: not configured.
    pub allowed_domains: Vec<String>,
    /// Public mail providers (lowercase); setting it replaces `DEFAULT_PUBLIC_DOMAINS`.
    pub public_domains: Vec<String>,
    /// Groups reported as not managed by the hosted service.
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

/// The validated configuration of one run.
#[derive(Debug, Clone)]
pub(crate) struct Config {
    /// The configuration file this run read (`--config`, `SCIMBRIDGE_CONFIG`, or the
    /// packaged one a management command fell back to), for hints that name the
    /// command to run next.
    pub file: Option<PathBuf>,
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
    /// redb page cache size in bytes; `None`: computed at start from the file size
    /// and the machine's memory.
    pub cache_bytes: Option<usize>,
    /// `storage.read_ahead`: walks over a table read ahead (`store/readahead.rs`).
    pub read_ahead: bool,
    /// What the hourly pruning of change events keeps.
    pub event_retention: EventRetention,
    /// When set, `/metrics` requires `Authorization: Bearer <this>`.
    pub metrics_token: Option<Secret>,
    /// What `migrate check` enforces (domains lowercase).
    pub migration: MigrationPolicy,
    /// The built-in admin page.
    pub admin: AdminConfig,
    /// Reverse proxies whose `X-Forwarded-For` names the client.
    pub trusted_proxies: TrustedProxies,
    /// Unknown attributes and declared schema extensions.
    pub scim: ScimConfig,
}

/// How the SCIM core treats what clients send (`[scim]`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct ScimConfig {
    /// Attributes no schema defines: refused (default) or dropped, counted and shown.
    pub unknown_attributes: crate::scim::resource::UnknownAttributes,
    /// Schema extensions the admin declared, published and stored like the built-in
    /// ones.
    pub extensions: Vec<crate::scim::schema::ExtensionDecl>,
}

/// Where and whether the admin page (`/admin`) is served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct AdminConfig {
    /// Off: `/admin` answers 404 everywhere.
    pub enabled: bool,
    /// A separate listener for the admin page (same TLS as the SCIM listener); when
    /// set, `/admin` on the SCIM listener answers 404.
    pub listen: Option<SocketAddr>,
}

impl Default for Config {
    fn default() -> Self {
        // Validating no settings at all gives the defaults; it cannot fail.
        validate(Settings::default(), None).unwrap_or_else(|_| unreachable!())
    }
}

impl Config {
    /// The database file in the data directory.
    pub(crate) fn db_path(&self) -> PathBuf {
        self.data_dir.join("scimbridge.redb")
    }

    /// How to run a CLI command on this bridge's data, for hints: `scimbridge --config
    /// FILE` when this run read a file (the CLI must read the same one: it names the
    /// data directory and more), else `scimbridge --data-dir DIR`.
    pub(crate) fn cli_prefix(&self) -> String {
        match &self.file {
            Some(f) => format!("scimbridge --config {}", f.display()),
            None => format!("scimbridge --data-dir {}", self.data_dir.display()),
        }
    }

    /// Whether answers carry `Strict-Transport-Security`: only with a certificate a
    /// browser can verify (from files or ACME), never self-signed or without TLS.
    pub(crate) fn hsts(&self) -> bool {
        matches!(self.tls, TlsMode::Files { .. } | TlsMode::Acme(_))
    }

    /// Settings that load but will not work as the admin likely means them, each
    /// with the fix (issue 14): shown by `check-config` and logged at start. The
    /// certificate's own faults (a missing intermediate, expiry, names) are the TLS
    /// checks' (`tls::check_config`).
    pub(crate) fn misconfigurations(&self) -> Vec<String> {
        let mut out = Vec::new();
        let public = !self.listen.ip().is_loopback();
        if public && self.tls == TlsMode::SelfSigned && self.public_url.is_none() {
            out.push(format!(
                "the SCIM listener {} is reachable from other machines, but its certificate is \
                 self-signed and public_url is not set: cloud identity providers (Entra ID, Okta) \
                 refuse self-signed certificates and need the name they connect to. Fix: set \
                 [tls] mode = \"acme\" (or \"files\" with your certificate) and \
                 public_url = \"https://scim.example.com:{}\"",
                self.listen,
                self.listen.port()
            ));
        }
        if public && self.metrics_token.is_none() {
            out.push(format!(
                "/metrics on the SCIM listener {} is reachable from other machines without a \
                 token: it shows token names and ids, request counts per token and the \
                 certificate's state. Fix: set [metrics] token = \"<a long random string>\" \
                 (or SCIMBRIDGE_METRICS_TOKEN) and give it to your scraper",
                self.listen
            ));
        }
        if self.admin.enabled {
            match self.admin.listen {
                None if public => out.push(format!(
                    "the admin page is served on the SCIM listener {}, which is reachable from \
                     other machines. Fix: set [admin] listen = \"127.0.0.1:9443\" and reach it \
                     through an SSH tunnel, or [admin] enabled = false",
                    self.listen
                )),
                Some(a) if !a.ip().is_loopback() => out.push(format!(
                    "the admin page listens on {a}, which is reachable from other machines. \
                     Fix: set [admin] listen = \"127.0.0.1:{}\" and reach it through an SSH tunnel",
                    a.port()
                )),
                _ => {}
            }
        }
        out
    }
}

/// The externally visible base URL, as the bridge builds its URLs from it:
/// `https://HOST[:PORT][/PREFIX]` without a trailing slash. The SCIM URL an admin
/// pasted (`https://x/scim/v2`, what the identity provider is given) is taken back to
/// its base, so URLs never read `…/scim/v2/scim/v2` (issue 14). Errors are sentences
/// for the admin.
pub(crate) fn normalise_public_url(given: &str) -> std::result::Result<String, String> {
    let u = given.trim().trim_end_matches('/');
    let Some((scheme, rest)) = u.split_once("://") else {
        return Err(format!(
            "\"{given}\" must start with https:// (or http:// behind a TLS proxy), e.g. https://scim.example.com"
        ));
    };
    if !matches!(scheme.to_ascii_lowercase().as_str(), "https" | "http") {
        return Err(format!(
            "\"{given}\" must start with https:// (or http:// behind a TLS proxy), e.g. https://scim.example.com"
        ));
    }
    if rest.contains(['?', '#', ' ', '\t']) || rest.starts_with('/') || rest.is_empty() {
        return Err(format!(
            "\"{given}\" is not a base URL like https://scim.example.com or https://example.com/bridge \
             (no query, fragment or spaces)"
        ));
    }
    let mut base = format!("{}://{rest}", scheme.to_ascii_lowercase());
    let lower = base.to_ascii_lowercase();
    // The SCIM API's path below the base (http::SCIM_PREFIX).
    if let Some(cut) = lower.strip_suffix("/scim/v2") {
        base.truncate(cut.len());
    }
    let base = base.trim_end_matches('/').to_owned();
    if base.ends_with("://") {
        return Err(format!("\"{given}\" names no host"));
    }
    Ok(base)
}

/// A TOML or serde error in the admin's words: "expected usize" means nothing to
/// someone editing a config file (issue 14).
fn in_admins_words(why: &str) -> String {
    // serde lists the keys of a section after an unknown field, and the values of a
    // setting after an unknown variant (trial 7: `mode = "selfsigned"` was told
    // "the keys allowed here are `self-signed`…").
    let allowed = if why.contains("unknown variant") {
        "; the values allowed here are"
    } else {
        "; the keys allowed here are"
    };
    let mut out = why.replace(", expected one of", allowed);
    for (parser, admin) in [
        ("expected usize", "expected a whole number (without quotes)"),
        ("expected u64", "expected a whole number (without quotes)"),
        ("expected u32", "expected a whole number (without quotes)"),
        ("expected u16", "expected a whole number (without quotes)"),
        ("expected u8", "expected a whole number (without quotes)"),
        ("expected i64", "expected a whole number (without quotes)"),
        (
            "expected a boolean",
            "expected true or false (without quotes)",
        ),
        ("expected a string", "expected text in double quotes"),
        (
            "expected a sequence",
            "expected a list such as [\"a\", \"b\"]",
        ),
        ("invalid type: string", "a quoted text"),
        ("invalid type: integer", "a number"),
        ("invalid type: boolean", "true/false"),
        ("invalid type: sequence", "a list"),
        ("invalid type: map", "a section"),
        ("invalid value: integer", "the number"),
        ("unknown field", "unknown key"),
        ("missing field", "missing key"),
        ("unknown variant", "unknown value"),
    ] {
        out = out.replace(parser, admin);
    }
    out
}

/// Reads a TOML file. Unknown keys are errors: a typo must not silently fall back to
/// a default. Errors name the file and the key (`serde_path_to_error` tracks where
/// in the document the TOML parser gave up).
pub(crate) fn read_file(path: &Path) -> Result<Settings> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the config file {}", path.display()))?;
    serde_path_to_error::deserialize(toml::Deserializer::new(&text)).map_err(|e| {
        let key = e.path().to_string();
        let why = in_admins_words(&e.into_inner().to_string());
        match key.as_str() {
            "." | "" => anyhow::anyhow!("{}: {}", path.display(), why.trim_end()),
            key => anyhow::anyhow!("{} (key {key}): {}", path.display(), why.trim_end()),
        }
    })
}

/// Applies the settings that only the environment gives (`SCIMBRIDGE_METRICS_TOKEN`)
/// over the file's.
pub(crate) fn apply_environment(s: &mut Settings) {
    // Set but empty counts as unset, as for every SCIMBRIDGE_* variable (`cli::command`).
    if let Ok(token) = std::env::var(METRICS_TOKEN_ENV) {
        if !token.is_empty() {
            s.metrics.token = Some(Secret::new(token));
            s.given.set(
                "metrics.token",
                format!("the environment variable {METRICS_TOKEN_ENV}"),
            );
        }
    }
}

/// Builds the configuration: the file (if any), then `layer` (the environment and
/// the flags, applied by the CLI), validated.
pub(crate) fn load(
    file: Option<&Path>,
    layer: impl FnOnce(&mut Settings) -> Result<()>,
) -> Result<Config> {
    let mut s = match file {
        Some(p) => read_file(p)?,
        None => Settings::default(),
    };
    layer(&mut s)?;
    validate(s, file)
}

/// `dir` made absolute against the working directory (`.` components dropped), so
/// that every message and log line names the data directory wherever it is read
/// (the trial: "restored/scimbridge.redb"); as given when the working directory is
/// gone.
fn absolute(dir: PathBuf) -> PathBuf {
    std::path::absolute(&dir).unwrap_or(dir)
}

/// Checks every setting and applies the defaults. Messages name where the value came
/// from: the flag or the environment variable that gave it, else the file and the key.
pub(crate) fn validate(mut s: Settings, file: Option<&Path>) -> Result<Config> {
    let given = std::mem::take(&mut s.given);
    let origin = |key: &str| match (given.source(key), file) {
        (Some(source), _) => source.to_owned(),
        (None, Some(p)) => format!("{} (key {key})", p.display()),
        (None, None) => key.to_owned(),
    };
    let listen: SocketAddr = match &s.listen {
        Some(l) => l.parse().with_context(|| {
            format!(
                "{}: \"{l}\" is not an address like 127.0.0.1:8443 or [::]:8443",
                origin("listen")
            )
        })?,
        None => DEFAULT_LISTEN
            .parse()
            .unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 8443))),
    };
    let public_url = match s.public_url {
        Some(u) => Some(
            normalise_public_url(&u)
                .map_err(|why| anyhow::anyhow!("{}: {why}", origin("public_url")))?,
        ),
        None => None,
    };
    let tls = match (s.tls.mode.unwrap_or_default(), s.tls.cert, s.tls.key) {
        (TlsModeName::SelfSigned, _, _) => TlsMode::SelfSigned,
        (TlsModeName::Off, _, _) => TlsMode::Off,
        (TlsModeName::Acme, _, _) => TlsMode::Acme(s.tls.acme.validate(listen, &origin)?),
        (TlsModeName::Files, Some(cert), Some(key)) => TlsMode::Files { cert, key },
        (TlsModeName::Files, _, _) => bail!(
            "{}: tls mode \"files\" needs both a certificate and a key: set tls.cert and tls.key \
             (or --tls-cert and --tls-key), or use --tls self-signed",
            origin("tls.mode")
        ),
    };
    let limits = s.limits;
    check_limits(&limits, &origin)?;
    if s.metrics.token.as_ref().is_some_and(|t| t.len() < 16) {
        bail!(
            "{}: the metrics token must be at least 16 characters",
            origin("metrics.token")
        );
    }
    let migration = migration_policy(s.migration, &origin)?;
    let admin_listen = match &s.admin.listen {
        Some(l) => {
            let addr: SocketAddr = l.parse().with_context(|| {
                format!(
                    "{}: \"{l}\" is not an address like 127.0.0.1:9443",
                    origin("admin.listen")
                )
            })?;
            if addr == listen && addr.port() != 0 {
                bail!(
                    "{}: {addr} is also the SCIM listener; choose another port, or leave admin.listen unset \
                     to serve the admin page on the SCIM listener",
                    origin("admin.listen")
                );
            }
            Some(addr)
        }
        None => None,
    };
    let scim = scim_config(s.scim, &origin)?;
    check_storage(&s.storage, &origin)?;
    Ok(Config {
        file: file.map(Path::to_path_buf),
        data_dir: absolute(
            s.data_dir
                .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR)),
        ),
        listen,
        public_url,
        tls,
        log_format: s.log_format.unwrap_or_default(),
        limits,
        cache_bytes: s.storage.cache_mb.map(|mb| mb << 20),
        read_ahead: s.storage.read_ahead,
        event_retention: EventRetention {
            max_age: Duration::from_secs(s.storage.events_max_age_days.saturating_mul(86_400)),
            max_count: s.storage.events_max_count,
        },
        metrics_token: s.metrics.token,
        migration,
        admin: AdminConfig {
            enabled: s.admin.enabled.unwrap_or(true),
            listen: admin_listen,
        },
        trusted_proxies: s.trusted_proxies,
        scim,
    })
}

/// `[limits]`: no unknown keys, sizes above their floors, counts and timeouts at
/// least 1, `default_page_size` ≤ `max_page_size` (docs/SECURITY.md lists them).
fn check_limits(limits: &Limits, origin: &dyn Fn(&str) -> String) -> Result<()> {
    if let Some(key) = limits.unknown.keys().next() {
        bail!(
            "{}: unknown key; docs/SECURITY.md lists the limits",
            origin(&format!("limits.{key}"))
        );
    }
    for (key, value, min) in [
        ("max_body_bytes", limits.max_body_bytes, 1024),
        ("max_value_bytes", limits.max_value_bytes, 1024),
        (
            "max_values_per_operation",
            limits.max_values_per_operation,
            100,
        ),
    ] {
        if value < min {
            bail!(
                "{}: must be at least {min}",
                origin(&format!("limits.{key}"))
            );
        }
    }
    let l = &limits.limiter;
    for (key, value) in [
        ("max_connections", limits.max_connections as u64),
        (
            "max_connections_per_address",
            limits.max_connections_per_address as u64,
        ),
        ("handshake_timeout_secs", limits.handshake_timeout.as_secs()),
        ("body_timeout_secs", limits.body_timeout.as_secs()),
        ("idle_timeout_secs", limits.idle_timeout.as_secs()),
        ("write_timeout_secs", limits.write_timeout.as_secs()),
        ("http2_max_streams", u64::from(limits.http2_max_streams)),
        ("token_requests", l.token_requests as u64),
        ("token_heavy", l.token_heavy as u64),
        ("address_requests", l.address_requests as u64),
        ("address_heavy", l.address_heavy as u64),
        ("heavy_slots", l.heavy_slots as u64),
        ("auth_failures", u64::from(l.auth_failures)),
        ("auth_failure_window_secs", l.auth_failure_window.as_secs()),
    ] {
        if value == 0 {
            bail!("{}: must be at least 1", origin(&format!("limits.{key}")));
        }
    }
    if limits.max_page_size == 0 || limits.default_page_size > limits.max_page_size {
        bail!(
            "{}: default_page_size must be at most max_page_size, which must be at least 1",
            origin("limits")
        );
    }
    Ok(())
}

/// `[migration]`: each allowed domain a bare domain name; domains lowercased
/// (RFC 4343: DNS names compare without case).
fn migration_policy(
    mut policy: MigrationPolicy,
    origin: &dyn Fn(&str) -> String,
) -> Result<MigrationPolicy> {
    for domain in &policy.allowed_domains {
        if domain.is_empty() || domain.contains('@') || domain.contains(char::is_whitespace) {
            bail!(
                "{}: \"{domain}\" is not a domain like example.com",
                origin("migration.allowed_domains")
            );
        }
    }
    for list in [&mut policy.allowed_domains, &mut policy.public_domains] {
        for d in list.iter_mut() {
            *d = d.to_lowercase();
        }
    }
    Ok(policy)
}

/// `[storage]`: a page cache of at least 1 MiB, events kept at least a day and at
/// least 1,000 of them (the mirror and the activity views read them).
fn check_storage(storage: &Storage, origin: &dyn Fn(&str) -> String) -> Result<()> {
    if storage.cache_mb == Some(0) {
        bail!("{}: must be at least 1", origin("storage.cache_mb"));
    }
    if storage.events_max_age_days < 1 {
        bail!(
            "{}: must be at least 1",
            origin("storage.events_max_age_days")
        );
    }
    if storage.events_max_count < 1000 {
        bail!(
            "{}: must be at least 1000",
            origin("storage.events_max_count")
        );
    }
    Ok(())
}

/// `[scim]` checked: the policy's name, and each declared extension as the core's
/// declaration (`scim::schema::validate_extensions` gives the rules).
fn scim_config(s: ScimSettings, origin: &dyn Fn(&str) -> String) -> Result<ScimConfig> {
    use crate::scim::resource::UnknownAttributes;
    let unknown_attributes = match s.unknown_attributes.as_deref() {
        None | Some("reject") => UnknownAttributes::Reject,
        Some("drop") => UnknownAttributes::Drop,
        Some(other) => bail!(
            "{}: \"{other}\" is not one of reject, drop",
            origin("scim.unknown_attributes")
        ),
    };
    let mut extensions = Vec::with_capacity(s.extensions.len());
    for (i, e) in s.extensions.into_iter().enumerate() {
        extensions.push(extension(e).map_err(|why| {
            anyhow::anyhow!("{}: {why}", origin(&format!("scim.extensions[{i}]")))
        })?);
    }
    crate::scim::schema::validate_extensions(&extensions)
        .map_err(|why| anyhow::anyhow!("{}: {why}", origin("scim.extensions")))?;
    Ok(ScimConfig {
        unknown_attributes,
        extensions,
    })
}

/// A `[[scim.extensions]]` table as the core's declaration.
fn extension(
    e: ExtensionSettings,
) -> std::result::Result<crate::scim::schema::ExtensionDecl, String> {
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

    /// Loads as `serve` does: the file, then these flags through clap.
    fn load_with(file: Option<&Path>, flags: &[&str]) -> Result<Config> {
        let cmd = Settings::augment_args(clap::Command::new("serve").no_binary_name(true));
        let matches = cmd.try_get_matches_from(flags)?;
        load(file, |s| s.apply_command_line(&matches))
    }

    /// Every flag of `Settings` has its file key in `ARG_KEYS`, so that an error in its
    /// value names the flag or the variable (a new flag cannot be forgotten).
    #[test]
    fn every_flag_has_its_file_key() {
        let cmd = Settings::augment_args(clap::Command::new("serve"));
        for arg in cmd.get_arguments() {
            let id = arg.get_id().as_str();
            assert!(
                ARG_KEYS.iter().any(|(a, _)| *a == id),
                "the argument {id} is missing from ARG_KEYS"
            );
        }
        assert_eq!(ARG_KEYS.len(), cmd.get_arguments().count());
    }

    /// A value checked after parsing names where it came from: the flag that gave it,
    /// not the file's key it overrode; a value from the file names the file and key.
    #[test]
    fn a_value_refused_after_parsing_names_the_flag_that_gave_it() {
        let (_d, p) = write("listen = \"127.0.0.1:9000\"\nadmin.listen = \"bad\"\n");
        let e = load_with(Some(&p), &["--listen", "nope"])
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("--listen: \"nope\" is not an address"), "{e}");
        assert!(!e.contains("key listen"), "{e}");
        let e = load_with(Some(&p), &[]).unwrap_err().to_string();
        assert!(e.contains("(key admin.listen): \"bad\""), "{e}");
        let e = load_with(None, &["--tls", "acme", "--acme-email", "ops"])
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("tls.acme.domains: "), "{e}");
        let e = load_with(
            None,
            &[
                "--tls",
                "acme",
                "--acme-domain",
                "x.example",
                "--acme-email",
                "ops",
            ],
        )
        .unwrap_err()
        .to_string();
        assert!(e.starts_with("--acme-email: \"ops\""), "{e}");
    }

    #[test]
    fn example_config_is_valid_and_matches_defaults() {
        let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/scimbridge.toml");
        let c = load_with(Some(&p), &[]).unwrap();
        let d = Config::default();
        assert_eq!((c.listen, c.data_dir, c.tls), (d.listen, d.data_dir, d.tls));
        assert_eq!(c.limits.max_body_bytes, d.limits.max_body_bytes);
        assert_eq!(
            (c.limits.max_value_bytes, c.limits.max_values_per_operation),
            (d.limits.max_value_bytes, d.limits.max_values_per_operation)
        );
        assert_eq!(c.scim, d.scim);
        assert_eq!(c.cache_bytes, d.cache_bytes);
        assert_eq!(c.read_ahead, d.read_ahead);
        assert_eq!(c.admin, d.admin);
    }

    #[test]
    fn admin_listener_and_switch() {
        let (_d, p) = write("[admin]\nenabled = false\nlisten = \"127.0.0.1:9443\"\n");
        let c = load_with(Some(&p), &[]).unwrap();
        assert!(!c.admin.enabled);
        assert_eq!(c.admin.listen.unwrap().port(), 9443);
        let flags = [
            "--admin-listen",
            "127.0.0.1:9444",
            "--admin-enabled",
            "true",
        ];
        let c = load_with(Some(&p), &flags).unwrap();
        assert!(c.admin.enabled);
        assert_eq!(c.admin.listen.unwrap().port(), 9444);
        let e = load_with(None, &["--admin-listen", "127.0.0.1:8443"])
            .unwrap_err()
            .to_string();
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
        let c = load_with(Some(&p), &[]).unwrap();
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
            ("[limits]\nmax_value_bytes = 100\n", "limits.max_value_bytes"),
            (
                "[limits]\nmax_values_per_operation = 10\n",
                "limits.max_values_per_operation",
            ),
        ] {
            let (_d, p) = write(bad);
            let e = load_with(Some(&p), &[]).unwrap_err().to_string();
            assert!(
                e.contains(why) && (e.contains("scim") || e.contains("limits")),
                "{bad}: {e}"
            );
        }
    }

    #[test]
    fn limits_and_trusted_proxies() {
        let (_d, p) = write(
            "trusted_proxies = [\"127.0.0.1\", \"10.0.0.0/8\", \"2001:db8::/32\"]\n\
             [limits]\ntoken_requests = 100\nidle_timeout_secs = 5\nauth_failures = 3\n",
        );
        let c = load_with(Some(&p), &[]).unwrap();
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
            let e = load_with(Some(&p), &[]).unwrap_err().to_string();
            assert!(
                e.contains("trusted_proxies") || e.contains("limits."),
                "{e}"
            );
        }
    }

    #[test]
    fn defaults() {
        let c = load_with(None, &[]).unwrap();
        assert_eq!(c.listen.to_string(), "127.0.0.1:8443");
        assert_eq!(c.tls, TlsMode::SelfSigned);
        let cwd = std::env::current_dir().unwrap();
        assert_eq!(c.data_dir, cwd.join("scimbridge-data"));
    }

    #[test]
    fn flags_override_file() {
        let (_d, p) =
            write("listen = \"127.0.0.1:9000\"\ndata_dir = \"/x\"\n[tls]\nmode = \"off\"\n");
        let c = load_with(Some(&p), &["--listen", "127.0.0.1:9001"]).unwrap();
        assert_eq!(c.listen.port(), 9001);
        assert_eq!(c.data_dir, PathBuf::from("/x"));
        assert_eq!(c.tls, TlsMode::Off);
    }

    #[test]
    fn unknown_key_names_file_and_key() {
        let (_d, p) = write("lissen = \"x\"\n");
        let e = load_with(Some(&p), &[]).unwrap_err().to_string();
        assert!(e.contains("c.toml") && e.contains("lissen"), "{e}");
        let (_d, p) = write("[tls]\nmod = \"off\"\n");
        let e = load_with(Some(&p), &[]).unwrap_err().to_string();
        assert!(e.contains("c.toml") && e.contains("mod"), "{e}");
    }

    #[test]
    fn bad_values_are_explained() {
        let (_d, p) = write("listen = \"nope\"\n");
        let e = load_with(Some(&p), &[]).unwrap_err().to_string();
        assert!(e.contains("listen") && e.contains("nope"), "{e}");
        let e = load_with(None, &["--tls", "files"])
            .unwrap_err()
            .to_string();
        assert!(e.contains("tls.cert"), "{e}");
        let (_d, p) = write("[tls]\nmode = \"sometimes\"\n");
        let e = load_with(Some(&p), &[]).unwrap_err().to_string();
        assert!(
            e.contains("c.toml") && e.contains("mode") && e.contains("self-signed"),
            "{e}"
        );
    }

    #[test]
    fn every_section_reads_from_the_file() {
        let (_d, p) = write(
            "log_format = \"json\"\n[limits]\nhandshake_timeout_secs = 3\nmax_page_size = 50\n\
             default_page_size = 5\n[storage]\ncache_mb = 8\nread_ahead = false\n[metrics]\ntoken = \"0123456789abcdef\"\n\
             [migration]\nallowed_domains = [\"Example.COM\"]\n",
        );
        let c = load_with(Some(&p), &[]).unwrap();
        assert_eq!(c.log_format, LogFormat::Json);
        assert_eq!(c.limits.handshake_timeout, Duration::from_secs(3));
        assert_eq!(
            (c.limits.default_page_size, c.limits.max_page_size),
            (5, 50)
        );
        assert_eq!(c.limits.max_body_bytes, Limits::default().max_body_bytes);
        assert_eq!(c.cache_bytes, Some(8 << 20));
        assert!(!c.read_ahead);
        assert!(c.metrics_token.unwrap().matches("0123456789abcdef"));
        assert_eq!(c.migration.allowed_domains, ["example.com"]);
        assert_eq!(
            c.migration.protected_groups,
            MigrationPolicy::default().protected_groups
        );
    }

    #[test]
    fn the_metrics_token_has_no_flag() {
        assert!(load_with(None, &["--metrics-token", "0123456789abcdef"]).is_err());
        let (_d, p) = write("[metrics]\ntoken = \"short\"\n");
        let e = load_with(Some(&p), &[]).unwrap_err().to_string();
        assert!(e.contains("metrics.token"), "{e}");
        assert!(!e.contains("short"), "the secret is not echoed: {e}");
    }

    #[test]
    fn acme_from_the_file_and_the_flags() {
        let (_d, p) = write(
            "[tls]\nmode = \"acme\"\n[tls.acme]\ndomains = [\"Scim.Example.com\"]\nemail = \"ops@example.com\"\n\
             staging = true\nhttp_listen = \"0.0.0.0:80\"\n",
        );
        let c = load_with(Some(&p), &[]).unwrap();
        let TlsMode::Acme(a) = c.tls else {
            panic!("not acme: {:?}", c.tls)
        };
        assert_eq!(a.domains, ["scim.example.com"]);
        assert_eq!(a.directory, LETS_ENCRYPT_STAGING);
        assert_eq!(a.http_listen.unwrap().port(), 80);
        assert_eq!(a.eab, None);
        // Flags replace the file's names and directory.
        let flags = [
            "--acme-domain",
            "a.example.com",
            "--acme-domain",
            "b.example.com",
            "--acme-directory",
            "https://ca.example.com/dir",
            "--acme-staging",
            "false",
        ];
        let TlsMode::Acme(a) = load_with(Some(&p), &flags).unwrap().tls else {
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
            load_with(Some(&p), &[])
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
            let e = load_with(Some(&p), &[]).unwrap_err().to_string();
            assert!(
                e.contains(expected) && e.contains("tls.acme.domains"),
                "{name}: {e}"
            );
        }
    }

    #[test]
    fn public_url_pasted_as_the_scim_url_is_taken_back_to_its_base() {
        for (given, want) in [
            ("https://x/scim/v2", "https://x"),
            ("https://x/scim/v2/", "https://x"),
            ("https://X.example:8443/SCIM/V2", "https://X.example:8443"),
            (
                "https://example.com/bridge/scim/v2",
                "https://example.com/bridge",
            ),
            ("https://scim.example.com/", "https://scim.example.com"),
            ("HTTPS://scim.example.com", "https://scim.example.com"),
        ] {
            assert_eq!(normalise_public_url(given).as_deref(), Ok(want), "{given}");
        }
        for bad in [
            "scim.example.com",
            "ftp://x",
            "https://",
            "https:///scim/v2",
            "https://x/?a=b",
            "https://x y",
        ] {
            assert!(normalise_public_url(bad).is_err(), "{bad}");
        }
        let c = load_with(None, &["--public-url", "https://scim.example.com/scim/v2"]).unwrap();
        assert_eq!(c.public_url.as_deref(), Some("https://scim.example.com"));
        let e = load_with(None, &["--public-url", "scim.example.com"]).unwrap_err();
        assert!(
            format!("{e:#}").contains("must start with https://"),
            "{e:#}"
        );
    }

    #[test]
    fn an_unknown_value_lists_the_values_and_an_unknown_key_the_keys() {
        let (_d, p) = write("[tls]\nmode = \"selfsigned\"\n");
        let e = format!("{:#}", load_with(Some(&p), &[]).unwrap_err());
        assert!(
            e.contains("unknown value `selfsigned`; the values allowed here are `self-signed`"),
            "{e}"
        );
        let (_d, p) = write("[tls]\nmood = \"off\"\n");
        let e = format!("{:#}", load_with(Some(&p), &[]).unwrap_err());
        assert!(
            e.contains("unknown key `mood`; the keys allowed here are `mode`"),
            "{e}"
        );
    }

    #[test]
    fn file_errors_are_in_the_admins_words() {
        let (_d, p) = write("[limits]\nmax_body_bytes = \"big\"\n");
        let e = format!("{:#}", load_with(Some(&p), &[]).unwrap_err());
        assert!(
            e.contains("limits.max_body_bytes") && e.contains("whole number"),
            "{e}"
        );
        assert!(!e.contains("usize"), "{e}");
        let (_d, p) = write("[admin]\nenabled = \"yes\"\n");
        let e = format!("{:#}", load_with(Some(&p), &[]).unwrap_err());
        assert!(e.contains("true or false"), "{e}");
    }

    #[test]
    fn public_listener_misconfigurations_are_named_with_the_fix() {
        // The packaged defaults: a public listener, self-signed, no public URL, the
        // admin page on loopback.
        let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("packaging/scimbridge.toml");
        let c = load_with(Some(&p), &[]).unwrap();
        let w = c.misconfigurations();
        assert_eq!(w.len(), 2, "{w:?}");
        assert!(
            w[0].contains("self-signed") && w[0].contains("public_url ="),
            "{w:?}"
        );
        // The trial (item 7): /metrics open on the public listener.
        assert!(
            w[1].contains("/metrics") && w[1].contains("[metrics] token"),
            "{w:?}"
        );
        // The admin page on the public listener.
        let c = load_with(
            None,
            &[
                "--listen",
                "0.0.0.0:8443",
                "--public-url",
                "https://x",
                "--tls",
                "off",
            ],
        )
        .unwrap();
        let c = Config {
            metrics_token: Some(Secret::new("a-long-random-metrics-token")),
            ..c
        };
        let w = c.misconfigurations();
        assert_eq!(w.len(), 1, "{w:?}");
        assert!(
            w[0].contains("admin page") && w[0].contains("127.0.0.1:9443"),
            "{w:?}"
        );
        let c = load_with(
            None,
            &[
                "--listen",
                "0.0.0.0:8443",
                "--admin-listen",
                "0.0.0.0:9443",
                "--public-url",
                "https://x",
            ],
        )
        .unwrap();
        let w = c.misconfigurations();
        assert!(
            w.iter()
                .any(|w| w.contains("admin page listens on 0.0.0.0:9443")),
            "{w:?}"
        );
        assert!(w.iter().any(|w| w.contains("/metrics")), "{w:?}");
        // Loopback, the quick start's defaults: nothing to say.
        assert!(load_with(None, &[]).unwrap().misconfigurations().is_empty());
    }
}
