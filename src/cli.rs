//! The command line: clap definitions (one variant per command) and the commands
//! that do not serve HTTP. Flags have `SCIMBRIDGE_*` environment equivalents; both
//! override the config file.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{anyhow, Context, Result};
use clap::{Args, Parser, Subcommand};

use crate::app::App;
use crate::clock::Timestamp;
use crate::config::{self, Config, Overrides, TlsMode};
use crate::control::{self, ControlRequest};
use crate::http::{self, AppState};
use crate::store::{Store, StoreError, StoreOptions};
use crate::tls;

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
    /// Move the directory to a hosted provisioning service.
    #[command(subcommand)]
    Migrate(MigrateCommand),
    /// Export the whole directory as one versioned, checksummed file (docs/EXPORT_FORMAT.md).
    Export {
        /// Output file, or - for stdout.
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
    },
    /// Restore an export file into an empty bridge.
    Import {
        /// The export file.
        file: PathBuf,
    },
    /// The admin page's password.
    #[command(subcommand)]
    Admin(AdminCommand),
    /// Write a consistent copy of the database while the server keeps serving.
    Backup {
        /// The backup file to write (replaced atomically if it exists).
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
    },
}

#[derive(Debug, Args, Default)]
pub struct ServeArgs {
    /// Address of the SCIM listener [default: 127.0.0.1:8443].
    #[arg(long, env = "SCIMBRIDGE_LISTEN", value_name = "ADDR")]
    pub listen: Option<String>,
    /// self-signed (generated on first start), files (--tls-cert/--tls-key), acme (--acme-domain,
    /// a certificate from Let's Encrypt or another ACME CA) or off (behind a TLS proxy).
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
    /// Require this bearer token on /metrics (environment only, to keep it out of `ps`).
    #[arg(skip = std::env::var("SCIMBRIDGE_METRICS_TOKEN").ok())]
    pub metrics_token: Option<String>,
    /// Serve the admin page on this address instead of the SCIM listener, e.g. 127.0.0.1:9443.
    #[arg(long, env = "SCIMBRIDGE_ADMIN_LISTEN", value_name = "ADDR")]
    pub admin_listen: Option<String>,
    /// Serve the admin page at /admin [default: true].
    #[arg(long, env = "SCIMBRIDGE_ADMIN_ENABLED", value_name = "BOOL")]
    pub admin_enabled: Option<bool>,
    #[command(flatten)]
    pub acme: config::AcmeSection,
}

#[derive(Debug, Subcommand)]
pub enum AdminCommand {
    /// Print a one-time link (valid for an hour) to set a new admin password; the
    /// current password keeps working until the new one is set.
    ResetPassword,
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

#[derive(Debug, Subcommand)]
pub enum MigrateCommand {
    /// Readiness report; exits non-zero when something blocks a migration.
    Check {
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Push the directory into the target SCIM endpoint, then keep mirroring changes.
    /// Run it again after an interruption: it resumes without duplicates.
    Push {
        /// The target's SCIM base URL, e.g. https://provisioning.example.com/scim/v2.
        #[arg(long, value_name = "URL")]
        to: String,
        /// File holding the target's bearer token (kept out of the process list).
        #[arg(long, value_name = "FILE")]
        token_file: PathBuf,
        /// PEM CA certificate(s) to verify the target with, instead of the system roots.
        #[arg(long, value_name = "FILE")]
        cacert: Option<PathBuf>,
        /// Print the plan (creates and updates) and send no writes.
        #[arg(long)]
        dry_run: bool,
        /// Allow a plain http:// target that is not on loopback.
        #[arg(long)]
        allow_http: bool,
    },
    /// Where the migration stands: state, push progress, mirror lag.
    Status {
        #[arg(long)]
        json: bool,
    },
    /// Read the target back and report every difference from the directory.
    Verify {
        #[arg(long)]
        json: bool,
    },
    /// Stop mirroring and return to "not started" (only before cut-over).
    Abort,
    /// Drain the mirror, verify, and stop accepting SCIM writes for good.
    Cutover {
        /// Required: the cut-over cannot be undone.
        #[arg(long)]
        confirm_irreversible: bool,
    },
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
            metrics_token: s.metrics_token,
            admin_listen: s.admin_listen,
            admin_enabled: s.admin_enabled,
            acme: s.acme,
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
                metrics_token: a.metrics_token.clone(),
                admin_listen: a.admin_listen.clone(),
                admin_enabled: a.admin_enabled,
                acme: a.acme.clone(),
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
            for w in tls::check_config(&cfg)? {
                println!("warning: {w}");
            }
            println!(
                "configuration OK: data_dir={} listen={} tls={} admin={}",
                cfg.data_dir.display(),
                cfg.listen,
                match &cfg.tls {
                    TlsMode::SelfSigned => "self-signed".to_owned(),
                    TlsMode::Files { cert, .. } => format!("files ({})", cert.display()),
                    TlsMode::Acme(a) => format!("acme ({}; {})", a.domains.join(", "), a.directory),
                    TlsMode::Off => "off".to_owned(),
                },
                match (cfg.admin.enabled, cfg.admin.listen) {
                    (false, _) => "off".to_owned(),
                    (true, None) => "on the SCIM listener".to_owned(),
                    (true, Some(a)) => format!("on {a}"),
                }
            );
            Ok(())
        }
        Command::Admin(AdminCommand::ResetPassword) => {
            let cfg = cli.load(None)?;
            let v = control_request(&cfg, ControlRequest::AdminResetPassword)?;
            let code = v["code"].as_str().unwrap_or_default();
            eprintln!(
                "Open this link within an hour to set a new admin password (it works once; \
                 the current password keeps working until then):"
            );
            match v["link"].as_str() {
                Some(link) => println!("{link}"),
                None => println!("https://HOST:PORT/admin/setup?code={code}"),
            }
            Ok(())
        }
        Command::Token(cmd) => {
            let cfg = cli.load(None)?;
            token(&cfg, cmd)
        }
        Command::Migrate(MigrateCommand::Push {
            to,
            token_file,
            cacert,
            dry_run,
            allow_http,
        }) => {
            let cfg = cli.load(None)?;
            let token = std::fs::read_to_string(token_file)
                .with_context(|| format!("cannot read the token file {}", token_file.display()))?
                .trim()
                .to_owned();
            if token.is_empty() {
                anyhow::bail!("the token file {} is empty", token_file.display());
            }
            let cacert = match cacert {
                Some(p) => Some(
                    std::fs::read_to_string(p)
                        .with_context(|| format!("cannot read {}", p.display()))?,
                ),
                None => None,
            };
            let req = crate::migrate::service::PushRequest {
                target: to.clone(),
                token,
                cacert,
                allow_http: *allow_http,
                dry_run: *dry_run,
            };
            let mut bar = Progress::new();
            let v =
                control_request_with_progress(&cfg, ControlRequest::MigratePush(req), &mut |p| {
                    bar.show(|| phase_progress(&p))
                });
            bar.done();
            let v = v?;
            if *dry_run {
                println!("Plan (dry run, nothing was sent):");
                println!("  target: {}", v["target"].as_str().unwrap_or_default());
                println!(
                    "  users:  {} ({} to create, {} to update)",
                    v["users"]["total"], v["users"]["create"], v["users"]["update"]
                );
                println!(
                    "  groups: {} ({} to create, {} to update)",
                    v["groups"]["total"], v["groups"]["create"], v["groups"]["update"]
                );
                println!("  memberships: {}", v["memberships"]);
                println!("  bulk: {}", if v["bulk"] == true { "yes" } else { "no" });
            } else {
                println!(
                    "pushed {} users and {} groups ({} created, {} updated, {} requests, {} throttled); now mirroring changes",
                    v["users"], v["groups"], v["created"], v["updated"], v["requests"], v["throttled"]
                );
                print_differences(&v["differences"]);
            }
            Ok(())
        }
        Command::Migrate(MigrateCommand::Status { json }) => {
            let cfg = cli.load(None)?;
            let v = control_request(&cfg, ControlRequest::MigrateStatus)?;
            if *json {
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                let st = &v["state"];
                println!("migration: {}", v["phaseText"].as_str().unwrap_or_default());
                if let Some(t) = st["target"].as_str() {
                    println!("target:    {t}");
                }
                let p = &st["progress"];
                println!(
                    "pushed:    {}/{} users, {}/{} groups",
                    p["users_done"], p["users_total"], p["groups_done"], p["groups_total"]
                );
                println!(
                    "mirror:    {} events behind ({:.1} s)",
                    v["lag"]["events"],
                    v["lag"]["seconds"].as_f64().unwrap_or(0.0)
                );
                if let Some(e) = st["lastError"].as_str() {
                    println!("last error: {e}");
                }
            }
            Ok(())
        }
        Command::Migrate(MigrateCommand::Verify { json }) => {
            let cfg = cli.load(None)?;
            let mut bar = Progress::new();
            let v = control_request_with_progress(&cfg, ControlRequest::MigrateVerify, &mut |p| {
                bar.show(|| phase_progress(&p))
            });
            bar.done();
            let v = v?;
            if *json {
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                print_differences(&v["differences"]);
            }
            if v["count"].as_u64().unwrap_or(0) > 0 {
                std::process::exit(2);
            }
            Ok(())
        }
        Command::Migrate(MigrateCommand::Abort) => {
            let cfg = cli.load(None)?;
            control_request(&cfg, ControlRequest::MigrateAbort)?;
            println!("migration aborted: mirroring stopped, the bridge stays the source of truth");
            Ok(())
        }
        Command::Migrate(MigrateCommand::Cutover {
            confirm_irreversible,
        }) => {
            let cfg = cli.load(None)?;
            if !confirm_irreversible {
                anyhow::bail!(
                    "cut-over is irreversible: afterwards this bridge refuses every SCIM write. \
                     Re-run with --confirm-irreversible once the identity provider is ready to be repointed"
                );
            }
            let v = control_request(
                &cfg,
                ControlRequest::MigrateCutover {
                    confirm_irreversible: true,
                },
            )?;
            let target = v["target"].as_str().unwrap_or("the target");
            println!(
                "cut over to {target}. This bridge now refuses SCIM writes; reads keep working."
            );
            println!("Repoint your identity provider:");
            println!("  Entra ID: Provisioning → Admin Credentials → Tenant URL = {target}, Secret Token = the new service's token");
            println!("  Okta:     Provisioning → Integration → SCIM connector base URL = {target}, API token = the new service's token");
            println!("Then the bridge can be decommissioned (keep an export: scimbridge export --out FILE).");
            Ok(())
        }
        Command::Migrate(MigrateCommand::Check { json }) => {
            let cfg = cli.load(None)?;
            let v = control_request(&cfg, ControlRequest::MigrateCheck)?;
            let report: crate::migrate::readiness::Report =
                serde_json::from_value(v.clone()).map_err(|e| anyhow!("unexpected report: {e}"))?;
            if *json {
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                print!("{}", crate::migrate::readiness::render_text(&report, 50));
            }
            if !report.ready {
                std::process::exit(2);
            }
            Ok(())
        }
        Command::Export { out } => {
            let cfg = cli.load(None)?;
            export(&cfg, out)
        }
        Command::Import { file } => {
            let cfg = cli.load(None)?;
            let v = match control::call_import(&cfg.data_dir, file) {
                Some(answer) => answer.map_err(|e| anyhow!(e))?,
                None => {
                    let store = open_store_for_cli(&cfg)?;
                    let r = crate::migrate::export::import_file(&store, file, Timestamp::now());
                    store.close();
                    let m = r.map_err(|e| anyhow!(e))?;
                    crate::migrate::export::imported_json(&m)
                }
            };
            let c = &v["counts"];
            println!(
                "imported {} users, {} groups and {} memberships from {}",
                c["users"],
                c["groups"],
                c["memberships"],
                file.display()
            );
            // An older export may hold what the current rules forbid: repaired, listed.
            for note in v["repaired"].as_array().into_iter().flatten() {
                eprintln!("repaired: {}", note.as_str().unwrap_or_default());
            }
            Ok(())
        }
        Command::Backup { out } => {
            let cfg = cli.load(None)?;
            backup(&cfg, out)
        }
    }
}

/// Opens the store for a one-off command when no server runs.
fn open_store_for_cli(cfg: &Config) -> Result<Store> {
    std::fs::create_dir_all(&cfg.data_dir).with_context(|| {
        format!(
            "cannot create the data directory {}",
            cfg.data_dir.display()
        )
    })?;
    let store = Store::open(&cfg.db_path(), &StoreOptions { cache_bytes: 16 << 20 }).map_err(|e| match e {
        StoreError::AlreadyOpen(_) => anyhow!(
            "the scimbridge server is running with the data directory {} and holds its database, \
             but its control socket ({}) does not answer.\n\
             Run this command as the user the server runs as, or stop the server (e.g. `systemctl stop scimbridge`) and retry.",
            cfg.data_dir.display(),
            control::socket_path(&cfg.data_dir).display()
        ),
        other => anyhow!(other),
    })?;
    adopt_data_dir_owner(cfg);
    if let Some(u) = store.upgraded() {
        eprintln!(
            "upgraded the database from format {} to {}; the file as it was is kept as {}",
            u.from,
            u.to,
            u.backup.display()
        );
        for note in &u.notes {
            eprintln!("repaired: {note}");
        }
    }
    Ok(store)
}

/// Root running a CLI command on a service's data directory would otherwise leave a
/// root-owned database the service cannot open: hand new files to the directory's
/// owner.
fn adopt_data_dir_owner(cfg: &Config) {
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::fs::MetadataExt;
        let (Ok(dir), Ok(me)) = (
            std::fs::metadata(&cfg.data_dir),
            std::fs::metadata("/proc/self"),
        ) else {
            return;
        };
        if me.uid() != 0 || dir.uid() == 0 {
            return;
        }
        let db = cfg.db_path();
        if std::fs::metadata(&db)
            .map(|m| m.uid() == 0)
            .unwrap_or(false)
        {
            if let Err(e) = std::os::unix::fs::chown(&db, Some(dir.uid()), Some(dir.gid())) {
                eprintln!(
                    "warning: could not give {} to the data directory's owner: {e}",
                    db.display()
                );
            }
        }
    }
}

/// Runs a control request on the running server, or directly on the database when
/// no server runs.
fn control_request(cfg: &Config, req: ControlRequest) -> Result<serde_json::Value> {
    control_request_with_progress(cfg, req, &mut |_| {})
}

fn control_request_with_progress(
    cfg: &Config,
    req: ControlRequest,
    progress: &mut (dyn FnMut(serde_json::Value) + Send),
) -> Result<serde_json::Value> {
    if let Some(answer) = control::call_with_progress(&cfg.data_dir, &req, progress) {
        return answer.map_err(|e| anyhow!(e));
    }
    let store = open_store_for_cli(cfg)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let answer = crate::migrate::service::Migration::new(store.clone(), cfg.migration.clone())
        .map_err(|e| anyhow!(e))
        .and_then(|m| {
            runtime
                .block_on(control::execute(&m, req, progress))
                .map_err(|e| anyhow!(e))
        });
    store.close();
    answer
}

fn token(cfg: &Config, cmd: &TokenCommand) -> Result<()> {
    match cmd {
        TokenCommand::Issue {
            name,
            read_only,
            expires_in,
        } => {
            let v = control_request(
                cfg,
                ControlRequest::TokenIssue {
                    name: name.clone(),
                    read_only: *read_only,
                    expires_in_days: *expires_in,
                },
            )?;
            let t = &v["token"];
            eprintln!(
                "Issued the {} token \"{}\"{}. Copy it now: it is shown only once and stored only as a hash.",
                t["scope"].as_str().unwrap_or_default(),
                t["name"].as_str().unwrap_or_default(),
                t["expires"].as_str().map(|e| format!(", expiring {e}")).unwrap_or_default()
            );
            println!("{}", v["secret"].as_str().unwrap_or_default());
        }
        TokenCommand::List { json } => {
            let v = control_request(cfg, ControlRequest::TokenList)?;
            let tokens = v.as_array().cloned().unwrap_or_default();
            let s = |t: &serde_json::Value, k: &str, none: &str| {
                t[k].as_str().unwrap_or(none).to_owned()
            };
            if *json {
                println!("{}", serde_json::to_string_pretty(&v)?);
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
                        s(t, "name", ""),
                        s(t, "scope", ""),
                        s(t, "state", ""),
                        s(t, "created", ""),
                        s(t, "lastUsed", "never"),
                        s(t, "expires", "never")
                    );
                }
            }
        }
        TokenCommand::Revoke { name } => {
            let v = control_request(cfg, ControlRequest::TokenRevoke { name: name.clone() })?;
            println!(
                "revoked the token \"{}\"",
                v["name"].as_str().unwrap_or_default()
            );
        }
    }
    Ok(())
}

/// The result of reading the target back.
fn print_differences(diffs: &serde_json::Value) {
    let diffs = diffs.as_array().cloned().unwrap_or_default();
    if diffs.is_empty() {
        println!("verified: the target matches the directory");
        return;
    }
    println!(
        "{} differences between the directory and the target:",
        diffs.len()
    );
    for d in &diffs {
        println!(
            "  {} {}: {}",
            d["resourceType"].as_str().unwrap_or(""),
            d["id"].as_str().unwrap_or(""),
            d["difference"].as_str().unwrap_or("")
        );
    }
}

/// "phase: done/total" of a migration progress report.
fn phase_progress(p: &serde_json::Value) -> String {
    format!(
        "{}: {}/{}",
        p["phase"].as_str().unwrap_or(""),
        p["done"],
        p["total"]
    )
}

/// A one-line progress display on stderr when it is a terminal.
struct Progress {
    on: bool,
    last: std::time::Instant,
}

impl Progress {
    fn new() -> Progress {
        use std::io::IsTerminal;
        Progress {
            on: std::io::stderr().is_terminal(),
            last: std::time::Instant::now(),
        }
    }
    fn show(&mut self, text: impl FnOnce() -> String) {
        if self.on && self.last.elapsed() > std::time::Duration::from_millis(100) {
            self.last = std::time::Instant::now();
            eprint!("\r\x1b[2K{}", text());
        }
    }
    fn done(&self) {
        if self.on {
            eprint!("\r\x1b[2K");
        }
    }
}

/// `backup --out FILE`: from a running server over the control socket (the server
/// makes the copy in its data directory and streams it), or directly.
fn backup(cfg: &Config, out: &Path) -> Result<()> {
    let out = std::path::absolute(out).with_context(|| format!("bad path {}", out.display()))?;
    if out == std::path::absolute(cfg.db_path()).unwrap_or_default() {
        anyhow::bail!("--out must not be the live database file");
    }
    let partial = out.with_extension("partial");
    let mut file = std::fs::File::create(&partial)
        .with_context(|| format!("cannot create {}", partial.display()))?;
    let streamed = control::call_stream(&cfg.data_dir, &ControlRequest::Backup, &mut file, |_| {});
    let counts = match streamed {
        Some(r) => r.map_err(|e| anyhow!(e)).map(|v| {
            (
                v["users"].as_u64().unwrap_or(0),
                v["groups"].as_u64().unwrap_or(0),
            )
        }),
        None => {
            drop(file);
            let store = open_store_for_cli(cfg)?;
            let r = store.backup_to(&partial).map_err(|e| anyhow!(e));
            store.close();
            r
        }
    };
    let (users, groups) = match counts {
        Ok(c) => c,
        Err(e) => {
            let _ = std::fs::remove_file(&partial);
            return Err(e);
        }
    };
    std::fs::File::open(&partial).and_then(|f| f.sync_all())?;
    std::fs::rename(&partial, &out).with_context(|| format!("cannot write {}", out.display()))?;
    println!(
        "backup written to {} ({users} users, {groups} groups)",
        out.display()
    );
    Ok(())
}

fn export(cfg: &Config, out: &Path) -> Result<()> {
    use std::io::Write;
    let to_stdout = out.as_os_str() == "-";
    let partial = out.with_extension("partial");
    let mut sink: Box<dyn Write> = if to_stdout {
        Box::new(std::io::BufWriter::new(std::io::stdout().lock()))
    } else {
        let f = std::fs::File::create(&partial)
            .with_context(|| format!("cannot create {}", partial.display()))?;
        Box::new(std::io::BufWriter::with_capacity(256 * 1024, f))
    };
    let mut progress = Progress::new();
    let streamed =
        control::call_stream(&cfg.data_dir, &ControlRequest::Export, &mut sink, |bytes| {
            progress.show(|| {
                format!(
                    "exporting from the running server… {:.1} MiB",
                    bytes as f64 / 1048576.0
                )
            })
        });
    let result = match streamed {
        Some(r) => r.map(|_| ()).map_err(|e| anyhow!(e)),
        None => {
            let store = open_store_for_cli(cfg)?;
            let now = Timestamp::now();
            let r = store
                .snapshot()
                .map_err(|e| anyhow!(e))
                .and_then(|snap| {
                    crate::migrate::export::write_export(&snap, &mut sink, now, |done, total| {
                        progress.show(|| format!("exporting… {done}/{total} records"))
                    })
                    .map_err(|e| anyhow!(e))
                })
                .and_then(|_| sink.flush().map_err(|e| anyhow!(e)));
            store.close();
            r
        }
    };
    progress.done();
    drop(sink);
    if let Err(e) = result {
        let _ = std::fs::remove_file(&partial);
        return Err(e);
    }
    if !to_stdout {
        std::fs::File::open(&partial).and_then(|f| f.sync_all())?;
        std::fs::rename(&partial, out)
            .with_context(|| format!("cannot write {}", out.display()))?;
        let manifest =
            crate::migrate::export::verify(std::io::BufReader::new(std::fs::File::open(out)?))
                .map_err(|e| anyhow!("the written export does not verify: {e}"))?;
        eprintln!(
            "exported {} users, {} groups and {} memberships to {}",
            manifest.counts.users,
            manifest.counts.groups,
            manifest.counts.memberships,
            out.display()
        );
    }
    Ok(())
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
    // The schemas are fixed for the life of the process, before any request is parsed.
    crate::scim::schema::install_extensions(&cfg.scim.extensions).map_err(|e| anyhow!(e))?;
    for ext in &cfg.scim.extensions {
        tracing::info!(urn = %ext.urn, resource_type = ext.resource_type.name(), attributes = ext.attributes.len(), "schema extension declared");
    }
    create_data_dir(&cfg.data_dir)?;
    let store = Store::open(&cfg.db_path(), &StoreOptions { cache_bytes: cfg.cache_bytes }).map_err(|e| match e {
        StoreError::AlreadyOpen(p) => anyhow!(
            "the database {} is already in use: another scimbridge is running with this data directory",
            p.display()
        ),
        other => anyhow!(other),
    })?;
    if cfg.tls == TlsMode::Off {
        tracing::warn!(
            "TLS is OFF: SCIM tokens and directory data travel in clear text. Only run this behind a \
             TLS-terminating reverse proxy on a trusted network."
        );
    }
    let (certs, keeper) = tls::start(&cfg)?.unzip();
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
        let acme_mode = matches!(cfg.tls, TlsMode::Acme(_));
        let acceptor = match &certs {
            Some(c) => Some(tokio_rustls::TlsAcceptor::from(Arc::new(tls::server_config(c.clone(), acme_mode)?))),
            None => None,
        };
        let scheme = if certs.is_some() { "https" } else { "http" };
        // In ACME mode the identity provider connects by the certificate's name.
        let origin = match (&cfg.public_url, &cfg.tls) {
            (Some(u), _) => u.clone(),
            (None, TlsMode::Acme(a)) if local.port() == 443 => format!("https://{}", a.domains[0]),
            (None, TlsMode::Acme(a)) => format!("https://{}:{}", a.domains[0], local.port()),
            (None, _) => format!("{scheme}://{local}"),
        };
        let url = format!("{origin}{}", http::SCIM_PREFIX);
        let http01 = match keeper.as_ref().and_then(|k| k.http01(&cfg)) {
            Some((addr, tokens)) => {
                let l = tokio::net::TcpListener::bind(addr).await.with_context(|| {
                    format!("cannot listen on {addr} for ACME HTTP-01; is another program using it? set --acme-http-listen")
                })?;
                tracing::info!(addr = %l.local_addr()?, "answering ACME HTTP-01 challenges; other plain HTTP requests are redirected to https");
                Some(tokio::spawn(http::acme::serve_http01(l, tokens, local.port(), cfg.public_url.clone())))
            }
            None => None,
        };
        let reloader = match (&certs, keeper) {
            (Some(c), Some(k)) => Some(tokio::spawn(k.run(c.clone()))),
            _ => None,
        };
        let migration = crate::migrate::service::Migration::new(store.clone(), cfg.migration.clone())
            .map_err(|e| anyhow!(e))?;
        let admin_listener = match cfg.admin.listen.filter(|_| cfg.admin.enabled) {
            Some(addr) => Some(tokio::net::TcpListener::bind(addr).await.with_context(|| {
                format!("cannot listen on {addr} for the admin page; is another program using it? set --admin-listen")
            })?),
            None => None,
        };
        let admin_url = match &admin_listener {
            Some(l) => format!("{scheme}://{}/admin", l.local_addr()?),
            None => format!("{origin}/admin"),
        };
        let app = Arc::new(App::new(store.clone(), cfg.clone(), migration.clone()));
        let state = Arc::new(AppState::new(app, certs));
        let mirror = tokio::spawn(crate::migrate::service::run_mirror(migration.clone()));
        if store.snapshot().and_then(|s| s.tokens()).map(|t| t.is_empty()).unwrap_or(false) {
            tracing::info!("no SCIM token yet: run `scimbridge token issue --name <idp>` with the same --data-dir");
        }
        let control_task = match control::bind(&cfg.data_dir) {
            Ok(listener) => {
                let migration = migration.clone();
                let dir = cfg.data_dir.clone();
                Some(tokio::spawn(async move { control::serve(&dir, listener, migration).await }))
            }
            Err(e) => {
                tracing::warn!(error = %e, "the control socket is not available; CLI commands need the server stopped");
                None
            }
        };
        tracing::info!(version = env!("CARGO_PKG_VERSION"), data_dir = %cfg.data_dir.display(), "scimbridge started");
        http::admin::announce(&state, &admin_url, &url).await;
        tracing::info!("SCIM URL for your identity provider: {url}");
        let flusher = {
            let state = state.clone();
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(std::time::Duration::from_secs(30));
                loop {
                    tick.tick().await;
                    state.app.flush_token_uses().await;
                }
            })
        };
        #[cfg(unix)]
        crate::sdnotify::notify(&format!("READY=1\nSTATUS=serving {url}"));
        // One signal stops both listeners.
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let admin_server = admin_listener.map(|l| {
            let mut rx = stop_rx.clone();
            tokio::spawn(http::server::run_listener(
                state.clone(),
                l,
                acceptor.clone(),
                async move {
                    let _ = rx.changed().await;
                },
                http::Listener::Admin,
            ))
        });
        http::server::run(state.clone(), listener, acceptor, async move {
            shutdown_signal().await;
            let _ = stop_tx.send(true);
        })
        .await;
        if let Some(a) = admin_server {
            let _ = a.await;
        }
        #[cfg(unix)]
        crate::sdnotify::notify("STOPPING=1");
        flusher.abort();
        mirror.abort();
        if let Some(r) = reloader {
            r.abort();
        }
        if let Some(h) = http01 {
            h.abort();
        }
        if let Some(t) = control_task {
            t.abort();
        }
        let _ = std::fs::remove_file(control::socket_path(&cfg.data_dir));
        state.app.flush_token_uses().await;
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
