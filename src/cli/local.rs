//! How a CLI command reaches the directory: through the running server's control
//! socket, or, when no server runs, by opening the database itself and running the
//! same `control::execute`. Also the one-line progress display on a terminal. This is
//! where the CLI turns typed errors into its messages (exit code 1, printed by `main`).

use anyhow::{anyhow, Context, Result};

use crate::app::App;
use crate::config::Config;
use crate::control::{self, wire::Reply, wire::Request};
use crate::localfs;
use crate::migrate::report::Progress;
use crate::store::{Store, StoreError, StoreOptions};

/// Runs a request on the running server, or directly on the database when no
/// server runs; `progress` sees the progress reports of long requests.
pub(super) fn request(
    cfg: &Config,
    req: Request,
    progress: &mut (dyn FnMut(Progress) + Send),
) -> Result<Reply> {
    request_quietly(cfg, req, progress, false)
}

/// As [`request`]; with `quiet`, a direct open prints no notes on stderr (a database
/// created, upgraded, its modes tightened), so `token issue --quiet` prints the token
/// alone (README). Errors and warnings still go to stderr.
pub(super) fn request_quietly(
    cfg: &Config,
    req: Request,
    progress: &mut (dyn FnMut(Progress) + Send),
    quiet: bool,
) -> Result<Reply> {
    // What can be refused without the data is refused before anything is opened or
    // created: `token issue --name "a b"` into a new directory leaves it absent.
    if let Request::TokenIssue(issue) = &req {
        issue.check()?;
    }
    if let Some(answer) = control::client::call(&cfg.data_dir, &req, &mut *progress) {
        return Ok(answer?);
    }
    // Scripts issue the first token before the first start; nothing else may
    // conjure an empty directory out of a mistyped path.
    let if_missing = match req {
        Request::TokenIssue(_) => IfMissing::CreateAndSay,
        Request::Import { .. } => IfMissing::Create,
        _ => IfMissing::Refuse,
    };
    let fresh = Fresh::before_open(cfg);
    let store = open_store(cfg, if_missing, quiet)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let answer = crate::migrate::service::Migration::new(store.clone(), cfg.migration.clone())
        .map_err(anyhow::Error::from)
        .and_then(|m| {
            let app = App::new(store.clone(), cfg.clone(), m);
            let caller = control::own_uid()
                .map(control::cli_caller)
                .unwrap_or_else(|| crate::app::audit::Caller::cli("(unknown)"));
            Ok(runtime.block_on(control::execute(&app, &caller, req, progress))?)
        });
    store.close();
    if answer.is_err() {
        fresh.undo(cfg);
    }
    answer
}

/// What a direct open is about to create: the database file, and the data directory
/// with the parents it lacks. A command refused after the open takes them away again,
/// so the next command does not take an empty database for a bridge with no data.
pub(super) struct Fresh {
    /// The database file did not exist.
    db: bool,
    /// The directories that did not exist, deepest first (the data directory, then
    /// the parents `create_dir_all` makes with it).
    dirs: Vec<std::path::PathBuf>,
}

impl Fresh {
    pub(super) fn before_open(cfg: &Config) -> Fresh {
        let missing = |p: &std::path::Path| std::fs::symlink_metadata(p).is_err();
        Fresh {
            db: missing(&cfg.db_path()),
            dirs: cfg
                .data_dir
                .ancestors()
                .take_while(|p| !p.as_os_str().is_empty() && missing(p))
                .map(std::path::Path::to_path_buf)
                .collect(),
        }
    }

    /// Removes what the open created. A directory that holds anything now (a file a
    /// concurrent command wrote) stays: `remove_dir` removes empty ones only.
    pub(super) fn undo(&self, cfg: &Config) {
        if self.db {
            let _ = std::fs::remove_file(cfg.db_path());
        }
        for dir in &self.dirs {
            if std::fs::remove_dir(dir).is_err() {
                break;
            }
        }
    }
}

/// The reply did not fit the request (a server of another version).
pub(super) fn unexpected(reply: Reply) -> anyhow::Error {
    anyhow!("unexpected answer from the server: {reply:?}")
}

/// What a command does when the data directory holds no database (issue 14: a
/// wrong `--data-dir` must not yield an empty backup and exit 0).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum IfMissing {
    /// Refuse, naming the path looked at: the command needs existing data.
    Refuse,
    /// Create it silently (`import` fills it at once).
    Create,
    /// Create it and say so on stderr (`token issue` before the first start).
    CreateAndSay,
}

/// The refusal of a command that needs an existing database.
pub(super) fn missing_database(cfg: &Config) -> anyhow::Error {
    let dir = &cfg.data_dir;
    let what = if dir.is_dir() {
        format!("the data directory {} holds no database", dir.display())
    } else {
        format!("the data directory {} does not exist", dir.display())
    };
    anyhow!(
        "no scimbridge database at {}: {what}. Point this command at the bridge's data with \
         --config FILE (the packaged install's is {}) or --data-dir DIR; a new bridge starts \
         with `scimbridge serve`, `scimbridge import FILE` or `scimbridge token issue`",
        cfg.db_path().display(),
        super::PACKAGED_CONFIG,
    )
}

/// The refusal of a command that may not look into the data directory: the trust
/// check's sentence (whose directory it is, the `chown` that fixes it), else the
/// IO error itself.
fn unreadable_database(cfg: &Config, e: std::io::Error) -> anyhow::Error {
    let context = format!("cannot open the database {}", cfg.db_path().display());
    match localfs::prepare_data_dir(&cfg.data_dir, false, &[]) {
        Err(trust) => anyhow!(trust).context(context),
        Ok(_) => anyhow!("{context}: {e}"),
    }
}

/// Opens the store for a one-off command when no server runs: the data directory
/// checked (and created 0700 where the command may create a database), and what a
/// root-run command created there handed to the directory's owner.
pub(super) fn open_store(cfg: &Config, if_missing: IfMissing, quiet: bool) -> Result<Store> {
    let db = cfg.db_path();
    let exists = match std::fs::symlink_metadata(&db) {
        Ok(_) => true,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
        // Not allowed to look (another user's 0700 directory, the trial's item 1):
        // the owner problem, in the words `serve` uses, not "no database".
        Err(e) => return Err(unreadable_database(cfg, e)),
    };
    if !exists && if_missing == IfMissing::Refuse {
        return Err(missing_database(cfg));
    }
    let prepared = localfs::prepare_data_dir(&cfg.data_dir, true, localfs::DATA_ENTRIES)
        .with_context(|| {
            format!(
                "the data directory {} is not safe to use",
                cfg.data_dir.display()
            )
        })?;
    for t in prepared.tightened.iter().filter(|_| !quiet) {
        eprintln!("scimbridge: {t} (the bridge's files are for its own user only)");
    }
    let store = Store::open(
        &db,
        &StoreOptions {
            cache_bytes: 16 << 20,
            read_ahead: cfg.read_ahead,
        },
    )
    .map_err(|e| match e {
        StoreError::AlreadyOpen(_) => anyhow!(
            "the scimbridge server is running with the data directory {} and holds its database, \
             but its control socket ({}) does not answer.\n\
             Run this command as the user the server runs as, or stop the server (e.g. `systemctl stop scimbridge`) and retry.",
            cfg.data_dir.display(),
            control::socket_path(&cfg.data_dir).display()
        ),
        other => anyhow!(other),
    })?;
    // Root on a service's directory: a root-owned database (or the copy kept by a
    // format upgrade) would lock the service out.
    for (path, e) in localfs::hand_over_tree(&prepared.trust, &cfg.data_dir) {
        eprintln!("scimbridge: warning: {}: {e}", path.display());
    }
    if let Some(u) = store.upgraded().filter(|_| !quiet) {
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
    if !exists && if_missing == IfMissing::CreateAndSay && !quiet {
        eprintln!(
            "scimbridge: created a new database at {} (no server was running and the data \
             directory held none); `scimbridge serve` with the same --config/--data-dir serves it",
            db.display()
        );
    }
    Ok(store)
}

/// A one-line progress display on stderr when it is a terminal.
pub(super) struct StatusLine {
    on: bool,
    last: std::time::Instant,
    /// No line printed yet: `tick` prints the first report at once.
    fresh: bool,
}

impl StatusLine {
    pub(super) fn new() -> StatusLine {
        use std::io::IsTerminal;
        StatusLine {
            on: std::io::stderr().is_terminal(),
            last: std::time::Instant::now(),
            fresh: true,
        }
    }

    /// Shows `text()` (at most ten times a second).
    pub(super) fn show(&mut self, text: impl FnOnce() -> String) {
        if self.on && self.last.elapsed() > std::time::Duration::from_millis(100) {
            self.last = std::time::Instant::now();
            eprint!("\r\x1b[2K{}", text());
        }
    }

    /// Like `show`, and when stderr is not a terminal (a script, a log), a full line
    /// for the first report and then every five seconds: a long migration step never
    /// runs silent.
    pub(super) fn tick(&mut self, text: impl FnOnce() -> String) {
        if self.on {
            return self.show(text);
        }
        if self.fresh || self.last.elapsed() > std::time::Duration::from_secs(5) {
            self.fresh = false;
            self.last = std::time::Instant::now();
            eprintln!("{}", text());
        }
    }

    /// A line that stays (a retry and its reason), whatever stderr is.
    pub(super) fn note(&mut self, text: &str) {
        if self.on {
            eprint!("\r\x1b[2K");
        }
        eprintln!("{text}");
    }

    /// Clears the line.
    pub(super) fn done(&self) {
        if self.on {
            eprint!("\r\x1b[2K");
        }
    }
}
