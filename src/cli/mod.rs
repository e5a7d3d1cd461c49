//! The command line: the clap definitions (one variant per command, here) and the
//! commands, one file per group (`token`, `migrate`, `data` for export, import and
//! backup, `admin`). Each command sends a typed request to the running server over
//! the control socket, or runs it on the database when no server runs (`local`),
//! and renders the typed reply. `serve` hands over to the server bootstrap
//! (`crate::server`). Flags have `SCIMBRIDGE_*` environment equivalents; both
//! override the config file.

mod admin;
mod data;
mod local;
mod migrate;
mod token;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::{ArgMatches, FromArgMatches, Parser, Subcommand};

use crate::config::{self, Config, Settings, TlsMode};
use crate::control::wire::{PolicyRequest, Reply, Request};
use crate::migrate::policy::PolicyView;

/// The command line (clap): global `--config` and `--data-dir`, then one subcommand
/// (`serve`, `token`, `check-config`, `migrate`, `export`, `import`, `admin`,
/// `backup`); `--help` and the man pages (examples/manpage.rs) come from it. (One
/// paragraph on purpose: clap would turn a second one into `long_about`.)
#[derive(Debug, Parser)]
#[command(
    name = "scimbridge",
    version = crate::version::VERSION,
    about = "A self-hosted SCIM 2.0 bridge: a TLS SCIM server with embedded storage"
)]
pub struct Cli {
    /// TOML configuration file (see config/scimbridge.toml).
    #[arg(long, global = true, env = "SCIMBRIDGE_CONFIG", value_name = "FILE")]
    pub(crate) config: Option<PathBuf>,
    /// Directory holding the database and the generated certificate [default: ./scimbridge-data].
    #[arg(long, global = true, env = "SCIMBRIDGE_DATA_DIR", value_name = "DIR")]
    pub(crate) data_dir: Option<PathBuf>,
    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Run the SCIM server.
    Serve(Settings),
    /// Issue, list and revoke SCIM bearer tokens.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Validate the configuration and print the result.
    CheckConfig(Settings),
    /// Move the directory to a hosted provisioning service.
    #[command(subcommand)]
    Migrate(MigrateCommand),
    /// Export the whole directory as one versioned, checksummed file (docs/EXPORT_FORMAT.md).
    Export {
        /// Output file, or - for stdout; an existing file is refused unless --force.
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
        /// Replace FILE if it exists (atomically: the old copy stays until the new one
        /// is complete and verified).
        #[arg(long)]
        force: bool,
    },
    /// Restore an export file into an empty bridge.
    Import {
        /// The export file.
        file: PathBuf,
    },
    /// The admin page's accounts: add, remove, list, reset a password.
    #[command(subcommand)]
    Admin(AdminCommand),
    /// Write a consistent copy of the database while the server keeps serving.
    Backup {
        /// The backup file to write; an existing file is refused unless --force.
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
        /// Replace FILE if it exists (atomically: the old copy stays until the new one
        /// is complete).
        #[arg(long)]
        force: bool,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum AdminCommand {
    /// Create a named admin account and print a one-time link (valid for an hour)
    /// that sets its password.
    Add {
        /// Letters, digits and . _ - @ (at most 64; case does not matter).
        name: String,
    },
    /// Remove an admin account; its sessions end. The last account that can sign in
    /// cannot be removed. Asks first when stdin is a terminal.
    Remove {
        name: String,
        /// Do not ask for confirmation.
        #[arg(long)]
        yes: bool,
    },
    /// Print a one-time link (valid for an hour) to set a new password for NAME (may
    /// be left out when there is one account); a current password keeps working
    /// until the new one is set, then the account's sessions end. An account that
    /// never set a password gets the link that sets its first one.
    ResetPassword { name: Option<String> },
    /// List the admin accounts (never their passwords).
    List {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum TokenCommand {
    /// Issue a new token; the secret is printed once, alone on the last line of stdout.
    Issue {
        /// A name for the token, e.g. the identity provider that uses it.
        #[arg(long)]
        name: String,
        /// The token may read but not write (writes answer 403).
        #[arg(long)]
        read_only: bool,
        /// Expire the token after this many days (1 to 3650; without it the token
        /// never expires).
        #[arg(long, value_name = "DAYS")]
        expires_in: Option<u32>,
        /// Print only the secret (on stdout), without the explanation on stderr: for
        /// scripts, e.g. `TOKEN=$(scimbridge token issue --name entra --quiet)`.
        #[arg(long, short)]
        quiet: bool,
    },
    /// List tokens (never their secrets).
    List {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Issue a successor under the token's name (same scope and lifetime), printed
    /// once; the old secret stays valid, shown as superseded, until it is revoked.
    Rotate {
        name: String,
        /// Print only the successor's secret (on stdout), without the explanation
        /// on stderr, as `token issue --quiet` does.
        #[arg(long, short)]
        quiet: bool,
    },
    /// Revoke a token by name (or by id, from `token list`); takes effect on the
    /// next request. Asks first when stdin is a terminal. After a rotation the name
    /// holds several secrets: --superseded revokes the old ones.
    Revoke {
        name: String,
        /// Revoke only the secrets superseded by `token rotate` under this name.
        #[arg(long)]
        superseded: bool,
        /// Do not ask for confirmation.
        #[arg(long)]
        yes: bool,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum PolicyCommand {
    /// Print each value and where it came from (stored, config file, default).
    Show {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Store values (comma-separated; the flag alone stores an empty list); fields not
    /// given keep theirs.
    Set {
        /// Email domains the hosted service accepts, e.g. example.com,example.org.
        #[arg(long, value_name = "DOMAINS", value_delimiter = ',', num_args = 0..)]
        allowed_domains: Option<Vec<String>>,
        /// Public mail providers whose addresses block a migration.
        #[arg(long, value_name = "DOMAINS", value_delimiter = ',', num_args = 0..)]
        public_domains: Option<Vec<String>>,
        /// Groups the hosted service will not manage (reported as warnings).
        #[arg(long, value_name = "GROUPS", value_delimiter = ',', num_args = 0..)]
        protected_groups: Option<Vec<String>>,
    },
    /// Forget stored values, so the config file's (or the default) apply again.
    Reset {
        /// The fields to reset [default: all].
        #[arg(value_enum)]
        fields: Vec<PolicyFieldName>,
    },
}

/// A policy field on the command line.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub(crate) enum PolicyFieldName {
    AllowedDomains,
    PublicDomains,
    ProtectedGroups,
}

#[derive(Debug, Subcommand)]
pub(crate) enum MigrateCommand {
    /// Readiness report; exits non-zero when something blocks a migration. With
    /// --to, also reads the target's capabilities and lists the attributes of the
    /// directory it cannot hold (nothing is written).
    Check {
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
        /// The target's SCIM base URL, to check what it can hold.
        #[arg(long, value_name = "URL", requires = "token_file")]
        to: Option<String>,
        /// File holding the target's bearer token.
        #[arg(long, value_name = "FILE")]
        token_file: Option<PathBuf>,
        /// PEM CA certificate(s) to verify the target with, instead of the system roots.
        #[arg(long, value_name = "FILE")]
        cacert: Option<PathBuf>,
        /// Allow a plain http:// target that is not on loopback.
        #[arg(long)]
        allow_http: bool,
    },
    /// Push the directory into the target SCIM endpoint, then keep mirroring changes.
    /// Run it again after an interruption: it resumes without duplicates.
    Push {
        /// The target's SCIM base URL, e.g. https://provisioning.example.com/scim/v2.
        /// Optional when a migration is under way: its stored target is used (e.g.
        /// after a restore from a backup, which leaves the target's token out).
        #[arg(long, value_name = "URL")]
        to: Option<String>,
        /// File holding the target's bearer token (kept out of the process list).
        #[arg(long, value_name = "FILE")]
        token_file: PathBuf,
        /// PEM CA certificate(s) to verify the target with, instead of the system roots.
        #[arg(long, value_name = "FILE")]
        cacert: Option<PathBuf>,
        /// Print the plan (every resource by name: created or matched, and by what
        /// rule; protected groups; what the target cannot hold; the readiness
        /// blockers, which make it exit with 2) and send no writes.
        #[arg(long)]
        dry_run: bool,
        /// Print the plan (with --dry-run: every resource by name, where the text
        /// shows 20 per rule) or the push's report as JSON.
        #[arg(long)]
        json: bool,
        /// Allow a plain http:// target that is not on loopback.
        #[arg(long)]
        allow_http: bool,
        /// Push without the attributes the target cannot hold (listed by --dry-run);
        /// without it the push refuses before writing anything.
        #[arg(long)]
        omit_unsupported: bool,
        /// Requests to the target in flight at once (1–64; default 8). 429 answers
        /// slow every one of them down.
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=64))]
        parallel: Option<u16>,
    },
    /// Where the migration stands: state, push progress, mirror lag.
    Status {
        /// Print the status as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Every pushed user and group with its id here and the id the target gave it
    /// (CSV: resourceType, name, externalId, id, targetId), for an identity provider
    /// that must be told the target's ids after the cut-over (Okta).
    IdMap {
        /// Print the map as JSON instead of CSV.
        #[arg(long)]
        json: bool,
    },
    /// Read the target back and report every difference from the directory.
    Verify {
        /// Print the report as JSON (exit code 2 when there are differences, as
        /// without it).
        #[arg(long)]
        json: bool,
        /// File holding the target's bearer token, for this run only: needed after
        /// the cut-over, which removes the stored token.
        #[arg(long, value_name = "FILE")]
        token_file: Option<PathBuf>,
        /// PEM CA certificate(s) to verify the target with, for this run only; without
        /// it, the CA given to `migrate push` (stored) is used, else the system roots.
        #[arg(long, value_name = "FILE")]
        cacert: Option<PathBuf>,
    },
    /// Stop mirroring and return to "not started" (only before cut-over).
    Abort,
    /// The policy `check` applies (allowed email domains, public mail domains,
    /// protected groups): one stored setting, shared with the admin page's Migration
    /// page, that takes precedence over the config file's [migration] and takes
    /// effect without a restart.
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// Drain the mirror, verify, and stop accepting SCIM writes for good.
    Cutover {
        /// Required: the cut-over cannot be undone.
        #[arg(long)]
        confirm_irreversible: bool,
    },
}

/// The packaged install's configuration file (packaging/scimbridge.toml), which
/// management commands read when nothing else names the bridge's data.
pub(crate) const PACKAGED_CONFIG: &str = "/etc/scimbridge/scimbridge.toml";

/// Whether a command falls back to `PACKAGED_CONFIG` (issue 14): only a management
/// command (not `serve`), only when neither `--config`/`SCIMBRIDGE_CONFIG` nor
/// `--data-dir`/`SCIMBRIDGE_DATA_DIR` is given and `./scimbridge-data` does not exist
/// (so a developer's `cargo run` and the tests never pick up a machine's packaged
/// configuration), and only when that file exists.
fn falls_back_to_packaged(
    serve: bool,
    config_given: bool,
    data_dir_given: bool,
    default_dir_exists: bool,
    packaged_exists: bool,
) -> bool {
    !serve && !config_given && !data_dir_given && !default_dir_exists && packaged_exists
}

impl Cli {
    /// The configuration file this command reads, if any.
    fn config_file(&self) -> Option<PathBuf> {
        if self.config.is_some() {
            return self.config.clone();
        }
        let fallback = falls_back_to_packaged(
            matches!(self.command, Command::Serve(_)),
            false,
            self.data_dir.is_some(),
            std::path::Path::new(config::DEFAULT_DATA_DIR).exists(),
            std::path::Path::new(PACKAGED_CONFIG).exists(),
        );
        if !fallback {
            return None;
        }
        eprintln!(
            "scimbridge: using the packaged configuration {PACKAGED_CONFIG} (no --config, \
             --data-dir, SCIMBRIDGE_CONFIG or SCIMBRIDGE_DATA_DIR given and no {} here)",
            config::DEFAULT_DATA_DIR
        );
        Some(PathBuf::from(PACKAGED_CONFIG))
    }

    /// The configuration: defaults ← file ← environment ← flags. `flags` are the
    /// matches of `serve` or `check-config` (the commands that take settings); the
    /// other commands take the file and the global `--data-dir`.
    fn load(&self, flags: Option<&ArgMatches>) -> Result<Config> {
        config::load(self.config_file().as_deref(), |s| {
            if let Some(m) = flags {
                s.apply_command_line(m)?;
                config::apply_environment(s);
            }
            if let Some(d) = &self.data_dir {
                s.data_dir = Some(d.clone());
            }
            Ok(())
        })
    }
}

/// The command line as `main` parses it: [`Cli`], with every `SCIMBRIDGE_*`
/// variable that is set but empty taken as unset. clap would take the empty value
/// and refuse it, even next to the flag (`SCIMBRIDGE_DATA_DIR= scimbridge token list
/// --data-dir D` failed in the trial); a flag always wins over its variable.
pub fn command() -> clap::Command {
    fn unset_empty(cmd: clap::Command) -> clap::Command {
        cmd.mut_args(|a| {
            let empty = a
                .get_env()
                .and_then(std::env::var_os)
                .is_some_and(|v| v.is_empty());
            if empty {
                a.env(None::<&'static str>)
            } else {
                a
            }
        })
        .mut_subcommands(unset_empty)
    }
    unset_empty(<Cli as clap::CommandFactory>::command())
}

/// Prints clap's answer to a command line it refused (or `--help`, `--version`) and
/// returns its exit code. An invalid value that came from a `SCIMBRIDGE_*` variable,
/// not from the command line, is named as such: clap names only the flag
/// (`invalid value 'bogus' for '--tls <MODE>'` when `SCIMBRIDGE_TLS=bogus`).
pub fn exit_on_usage_error(e: clap::Error) -> ExitCode {
    let text = e.render().to_string();
    let text = match env_source(&e) {
        Some(var) => {
            let note = format!(
                "  note: the value comes from the environment variable {var}; correct or unset it\n"
            );
            match text.find("\nFor more information") {
                Some(i) => format!("{}{note}{}", &text[..i], &text[i..]),
                None => format!("{text}{note}"),
            }
        }
        None => text,
    };
    if e.use_stderr() {
        eprint!("{text}");
    } else {
        print!("{text}");
    }
    ExitCode::from(u8::try_from(e.exit_code()).unwrap_or(2))
}

/// The `SCIMBRIDGE_*` variable an invalid value in `e` came from: the refused flag's
/// variable holds that value and the flag is not on the command line.
fn env_source(e: &clap::Error) -> Option<String> {
    use clap::error::{ContextKind, ContextValue, ErrorKind};
    if !matches!(
        e.kind(),
        ErrorKind::InvalidValue | ErrorKind::ValueValidation
    ) {
        return None;
    }
    let (Some(ContextValue::String(arg)), Some(ContextValue::String(value))) = (
        e.get(ContextKind::InvalidArg),
        e.get(ContextKind::InvalidValue),
    ) else {
        return None;
    };
    // "--tls <MODE>" names the flag `tls`.
    let long = arg.strip_prefix("--")?.split([' ', '=']).next()?;
    let given =
        std::env::args().any(|a| a == format!("--{long}") || a.starts_with(&format!("--{long}=")));
    if given {
        return None;
    }
    fn find(cmd: &clap::Command, long: &str) -> Option<String> {
        cmd.get_arguments()
            .find(|a| a.get_long() == Some(long))
            .and_then(|a| a.get_env())
            .map(|v| v.to_string_lossy().into_owned())
            .or_else(|| cmd.get_subcommands().find_map(|c| find(c, long)))
    }
    let var = find(&command(), long)?;
    std::env::var(&var)
        .is_ok_and(|v| v.contains(value.as_str()))
        .then_some(var)
}

/// Asks a person at the terminal `question` (ending in "[y/N] ") on stderr; true
/// for "y" or "yes". Destructive commands (`token revoke`, `admin remove`) ask only
/// when stdin is a terminal and not with `--yes`, so scripts stay non-interactive.
pub(super) fn confirmed(question: &str) -> Result<bool> {
    use std::io::Write;
    eprint!("{question}");
    std::io::stderr().flush()?;
    let mut answer = String::new();
    std::io::stdin().read_line(&mut answer)?;
    Ok(matches!(
        answer.trim().to_ascii_lowercase().as_str(),
        "y" | "yes"
    ))
}

/// `NAME` as a shell user would type it back: quoted when it holds anything but
/// letters, digits and `. _ - @` (a token named before names had rules may hold a
/// space).
pub(super) fn shell_word(name: &str) -> String {
    let plain = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '@'));
    if plain {
        name.to_owned()
    } else {
        format!("'{}'", name.replace('\'', "'\\''"))
    }
}

/// Runs the command that `matches` (from [`command`]) names. The exit code is
/// 0, or 2 when a report found a problem (`migrate check` blockers, `migrate verify`
/// differences); errors are printed by `main` (exit code 1).
pub fn run(matches: &ArgMatches) -> Result<ExitCode> {
    let cli = Cli::from_arg_matches(matches)?;
    let flags = matches.subcommand().map(|(_, m)| m);
    match &cli.command {
        Command::Serve(_) => crate::server::run(cli.load(flags)?).map(|()| ExitCode::SUCCESS),
        Command::CheckConfig(_) => check_config(&cli.load(flags)?),
        Command::Token(cmd) => token::run(&cli.load(None)?, cmd),
        Command::Migrate(cmd) => migrate::run(&cli.load(None)?, cmd),
        Command::Admin(cmd) => admin::run(&cli.load(None)?, cmd),
        Command::Export { out, force } => data::export(&cli.load(None)?, out, *force),
        Command::Import { file } => data::import(&cli.load(None)?, file),
        Command::Backup { out, force } => data::backup(&cli.load(None)?, out, *force),
    }
}

/// `check-config`: the configuration loads, and the certificate files (if any) read.
fn check_config(cfg: &Config) -> Result<ExitCode> {
    for w in cfg.misconfigurations() {
        println!("warning: {w}");
    }
    for w in crate::tls::check_config(cfg)? {
        println!("warning: {w}");
    }
    // The stored migration policy overrides this file's [migration] (issue 14).
    if cfg.db_path().exists() {
        let show = Request::MigratePolicy(PolicyRequest::Show);
        match local::request(cfg, show, &mut |_| {}) {
            Ok(Reply::Policy(v)) => {
                let against_this_file = PolicyView::resolve(&v.stored(), &cfg.migration);
                for w in against_this_file.file_warnings() {
                    println!("warning: {w}");
                }
            }
            Ok(_) => {}
            Err(e) => println!("note: the stored migration policy could not be read: {e:#}"),
        }
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
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::falls_back_to_packaged as fallback;

    /// Issue 15 trial: `migrate verify --help` showed `--json` without a word.
    #[test]
    fn every_migrate_flag_and_argument_has_help() {
        use clap::CommandFactory;
        fn undocumented(cmd: &clap::Command, path: &str, out: &mut Vec<String>) {
            for a in cmd.get_arguments() {
                let id = a.get_id().as_str();
                if id != "help" && id != "version" && a.get_help().is_none() {
                    out.push(format!("{path}: {id}"));
                }
            }
            for sub in cmd.get_subcommands() {
                undocumented(sub, &format!("{path} {}", sub.get_name()), out);
            }
        }
        let cli = super::Cli::command();
        let migrate = cli.find_subcommand("migrate").expect("a migrate command");
        let mut missing = Vec::new();
        undocumented(migrate, "migrate", &mut missing);
        assert!(migrate.get_subcommands().count() >= 7);
        assert_eq!(missing, Vec::<String>::new());
    }

    #[test]
    fn packaged_config_only_when_nothing_names_the_data() {
        assert!(fallback(false, false, false, false, true));
        // serve never: the unit passes --config, a developer's serve uses ./scimbridge-data.
        assert!(!fallback(true, false, false, false, true));
        assert!(!fallback(false, true, false, false, true));
        assert!(!fallback(false, false, true, false, true));
        assert!(!fallback(false, false, false, true, true));
        assert!(!fallback(false, false, false, false, false));
    }
}
