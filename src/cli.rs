//! The command line: clap definitions (one variant per command) and the commands
//! that do not serve HTTP. Flags have `SCIMBRIDGE_*` environment equivalents; both
//! override the config file.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{anyhow, bail, Context, Result};
use clap::{Args, Parser, Subcommand};

use crate::config::{self, Config, Overrides, TlsMode};
use crate::http::{self, tls, AppState};
use crate::store::{Scope, Store, StoreError, StoreOptions};

#[derive(Debug, Parser)]
#[command(
    name = "scimbridge",
    version,
    about = "A self-hosted SCIM 2.0 bridge: a TLS SCIM server with embedded storage"
)]
pub struct Cli {
    /// TOML configuration file (see config/scimbridge.toml).
    #[arg(long, global = true, env = "SCIMBRIDGE_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Directory holding the database and the generated certificate [default: ./scimbridge-data].
    #[arg(long, global = true, env = "SCIMBRIDGE_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the SCIM server.
    Serve(ServeArgs),
    /// Issue, list and revoke SCIM bearer tokens.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Validate the configuration and print the result.
    CheckConfig(ServeArgs),
}

#[derive(Debug, Args, Default)]
pub struct ServeArgs {
    /// Address of the SCIM listener [default: 127.0.0.1:8443].
    #[arg(long, env = "SCIMBRIDGE_LISTEN", value_name = "ADDR")]
    pub listen: Option<String>,
    /// self-signed (generated on first start), files (--tls-cert/--tls-key) or off (behind a TLS proxy).
    #[arg(long, env = "SCIMBRIDGE_TLS", value_name = "MODE")]
    pub tls: Option<String>,
    /// PEM certificate chain for --tls files.
    #[arg(long, env = "SCIMBRIDGE_TLS_CERT", value_name = "FILE")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for --tls files.
    #[arg(long, env = "SCIMBRIDGE_TLS_KEY", value_name = "FILE")]
    pub tls_key: Option<PathBuf>,
    /// Externally visible base URL, e.g. https://scim.example.com (used in resource locations).
    #[arg(long, env = "SCIMBRIDGE_PUBLIC_URL", value_name = "URL")]
    pub public_url: Option<String>,
    /// human or json.
    #[arg(long, env = "SCIMBRIDGE_LOG_FORMAT", value_name = "FORMAT")]
    pub log_format: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Issue a new token; the secret is printed once, alone on the last line of stdout.
    Issue {
        /// A name for the token, e.g. the identity provider that uses it.
        #[arg(long)]
        name: String,
        /// The token may read but not write (writes answer 403).
        #[arg(long)]
        read_only: bool,
        /// Expire the token after this many days.
        #[arg(long, value_name = "DAYS")]
        expires_in: Option<u32>,
    },
    /// List tokens (never their secrets).
    List {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Revoke a token by name; takes effect on the next request.
    Revoke { name: String },
}

impl Cli {
    fn overrides(&self, serve: Option<&ServeArgs>) -> Overrides {
        let s = serve.cloned_args();
        Overrides {
            data_dir: self.data_dir.clone(),
            listen: s.listen,
            public_url: s.public_url,
            tls: s.tls,
            tls_cert: s.tls_cert,
            tls_key: s.tls_key,
            log_format: s.log_format,
        }
    }

    fn load(&self, serve: Option<&ServeArgs>) -> Result<Config> {
        config::load(self.config.as_deref(), &self.overrides(serve))
    }
}

trait ClonedArgs {
    fn cloned_args(&self) -> ServeArgs;
}

impl ClonedArgs for Option<&ServeArgs> {
    fn cloned_args(&self) -> ServeArgs {
        match self {
            Some(a) => ServeArgs {
                listen: a.listen.clone(),
                tls: a.tls.clone(),
                tls_cert: a.tls_cert.clone(),
                tls_key: a.tls_key.clone(),
                public_url: a.public_url.clone(),
                log_format: a.log_format.clone(),
            },
            None => ServeArgs::default(),
        }
    }
}

pub fn run(cli: Cli) -> Result<()> {
    match &cli.command {
        Command::Serve(args) => {
            let cfg = cli.load(Some(args))?;
            serve(cfg)
        }
        Command::CheckConfig(args) => {
            let cfg = cli.load(Some(args))?;
            if let TlsMode::Files { cert, key } = &cfg.tls {
                tls::load_pem(cert, key)?;
            }
            println!(
                "configuration OK: data_dir={} listen={} tls={}",
                cfg.data_dir.display(),
                cfg.listen,
                match &cfg.tls {
                    TlsMode::SelfSigned => "self-signed".to_owned(),
                    TlsMode::Files { cert, .. } => format!("files ({})", cert.display()),
                    TlsMode::Off => "off".to_owned(),
                }
            );
            Ok(())
        }
        Command::Token(cmd) => {
            let cfg = cli.load(None)?;
            token(&cfg, cmd)
        }
    }
}

/// Opens the store for a one-off command, explaining the usual reasons it fails.
fn open_store_for_cli(cfg: &Config) -> Result<Store> {
    let path = cfg.db_path();
    if !path.exists() {
        std::fs::create_dir_all(&cfg.data_dir).with_context(|| {
            format!(
                "cannot create the data directory {}",
                cfg.data_dir.display()
            )
        })?;
    }
    Store::open(&path, &StoreOptions { cache_bytes: 16 << 20 }).map_err(|e| match e {
        StoreError::AlreadyOpen(_) => anyhow!(
            "the scimbridge server is running with the data directory {} and holds its database.\n\
             Stop the server (e.g. `systemctl stop scimbridge`), run this command, then start it again.",
            cfg.data_dir.display()
        ),
        other => anyhow!(other),
    })
}

fn token(cfg: &Config, cmd: &TokenCommand) -> Result<()> {
    let store = open_store_for_cli(cfg)?;
    let (now_s, now_ms) = http::now();
    let result = match cmd {
        TokenCommand::Issue {
            name,
            read_only,
            expires_in,
        } => {
            let name = name.trim();
            if name.is_empty() || name.len() > 100 || name.chars().any(char::is_control) {
                bail!("--name must be 1 to 100 printable characters");
            }
            let scope = if *read_only {
                Scope::ReadOnly
            } else {
                Scope::ReadWrite
            };
            let expires = expires_in.map(|days| {
                let t = time::OffsetDateTime::now_utc() + time::Duration::days(i64::from(days));
                let t = t.replace_millisecond(t.millisecond()).unwrap_or(t);
                t.format(&time::format_description::well_known::Rfc3339)
                    .unwrap_or_default()
            });
            let (record, secret, hash) =
                crate::auth::new_token(name, scope, &now_s, expires.clone(), now_ms)
                    .map_err(|_| anyhow!("the operating system's random generator failed"))?;
            store
                .add_token_blocking(record, hash)
                .map_err(|e| anyhow!(e))?;
            eprintln!(
                "Issued the {} token \"{name}\"{}. Copy it now: it is shown only once and stored only as a hash.",
                scope.as_str(),
                expires.map(|e| format!(", expiring {e}")).unwrap_or_default()
            );
            println!("{}", secret.0);
            Ok(())
        }
        TokenCommand::List { json } => {
            let tokens = store
                .snapshot()
                .and_then(|s| s.tokens())
                .map_err(|e| anyhow!(e))?;
            if *json {
                let list: Vec<serde_json::Value> = tokens
                    .iter()
                    .map(|t| {
                        serde_json::json!({
                            "id": t.id, "name": t.name, "scope": t.scope.as_str(), "state": t.state(&now_s),
                            "created": t.created, "lastUsed": t.last_used, "expires": t.expires, "revoked": t.revoked,
                        })
                    })
                    .collect();
                println!("{}", serde_json::to_string_pretty(&list)?);
            } else if tokens.is_empty() {
                println!("no tokens; issue one with: scimbridge token issue --name NAME");
            } else {
                println!(
                    "{:<24} {:<10} {:<8} {:<24} {:<24} EXPIRES",
                    "NAME", "SCOPE", "STATE", "CREATED", "LAST USED"
                );
                for t in &tokens {
                    println!(
                        "{:<24} {:<10} {:<8} {:<24} {:<24} {}",
                        t.name,
                        t.scope.as_str(),
                        t.state(&now_s),
                        t.created,
                        t.last_used.as_deref().unwrap_or("never"),
                        t.expires.as_deref().unwrap_or("never")
                    );
                }
            }
            Ok(())
        }
        TokenCommand::Revoke { name } => {
            let rec = store
                .revoke_token_blocking(name.clone(), now_s)
                .map_err(|e| anyhow!(e))?;
            println!("revoked the token \"{}\"", rec.name);
            Ok(())
        }
    };
    store.close();
    result
}

fn init_logging(cfg: &Config) {
    use tracing_subscriber::EnvFilter;
    let filter =
        EnvFilter::try_from_env("SCIMBRIDGE_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    use std::io::IsTerminal;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    let _ = match cfg.log_format {
        config::LogFormat::Json => builder.json().try_init(),
        config::LogFormat::Human => builder.try_init(),
    };
}

fn create_data_dir(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| {
        format!(
            "cannot create the data directory {}; set --data-dir to a writable place",
            dir.display()
        )
    })?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700));
    }
    Ok(())
}

fn serve(cfg: Config) -> Result<()> {
    init_logging(&cfg);
    create_data_dir(&cfg.data_dir)?;
    let store = Store::open(&cfg.db_path(), &StoreOptions { cache_bytes: cfg.cache_bytes }).map_err(|e| match e {
        StoreError::AlreadyOpen(p) => anyhow!(
            "the database {} is already in use: another scimbridge is running with this data directory",
            p.display()
        ),
        other => anyhow!(other),
    })?;
    let certs = match &cfg.tls {
        TlsMode::Off => {
            tracing::warn!(
                "TLS is OFF: SCIM tokens and directory data travel in clear text. Only run this behind a \
                 TLS-terminating reverse proxy on a trusted network."
            );
            None
        }
        TlsMode::SelfSigned => {
            let extra = if cfg.listen.ip().is_unspecified() {
                vec![]
            } else {
                vec![cfg.listen.ip().to_string()]
            };
            let (cert, key, created) = tls::ensure_self_signed(&cfg.data_dir, &extra)?;
            if created {
                tracing::info!(cert = %cert.display(), "generated a self-signed certificate");
            }
            Some(Arc::new(tls::CertStore::new(tls::load_pem(&cert, &key)?)))
        }
        TlsMode::Files { cert, key } => {
            Some(Arc::new(tls::CertStore::new(tls::load_pem(cert, key)?)))
        }
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("scimbridge")
        .build()
        .context("cannot start the async runtime")?;
    let served = store.clone();
    let result = runtime.block_on(async move {
        let store = served;
        let listener = tokio::net::TcpListener::bind(cfg.listen)
            .await
            .with_context(|| format!("cannot listen on {}; is another program using it? set --listen", cfg.listen))?;
        let local = listener.local_addr()?;
        let acceptor = match &certs {
            Some(c) => Some(tokio_rustls::TlsAcceptor::from(Arc::new(tls::server_config(c.clone())?))),
            None => None,
        };
        let scheme = if certs.is_some() { "https" } else { "http" };
        let url = match &cfg.public_url {
            Some(u) => format!("{u}{}", http::SCIM_PREFIX),
            None => format!("{scheme}://{local}{}", http::SCIM_PREFIX),
        };
        let state = Arc::new(AppState::new(store.clone(), cfg.clone(), certs));
        tracing::info!(version = env!("CARGO_PKG_VERSION"), data_dir = %cfg.data_dir.display(), "scimbridge started");
        tracing::info!("SCIM URL for your identity provider: {url}");
        if store.snapshot().and_then(|s| s.tokens()).map(|t| t.is_empty()).unwrap_or(false) {
            tracing::info!(
                "no SCIM token yet: stop the server and run `scimbridge token issue --name <idp>` with the same --data-dir"
            );
        }
        let flusher = {
            let state = state.clone();
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(std::time::Duration::from_secs(30));
                loop {
                    tick.tick().await;
                    state.flush_token_uses().await;
                }
            })
        };
        http::server::run(state.clone(), listener, acceptor, shutdown_signal()).await;
        flusher.abort();
        state.flush_token_uses().await;
        tracing::info!("scimbridge stopped");
        Ok::<(), anyhow::Error>(())
    });
    store.close();
    result
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = match signal(SignalKind::terminate()) {
            Ok(s) => s,
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
                return;
            }
        };
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
            _ = tokio::signal::ctrl_c() => tracing::info!("interrupt: shutting down"),
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
