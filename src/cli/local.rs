//! How a CLI command reaches the directory: through the running server's control
//! socket, or, when no server runs, by opening the database itself and running the
//! same `control::execute`. Also the one-line progress display on a terminal. This is
//! where the CLI turns typed errors into its messages (exit code 1, printed by `main`).

use anyhow::{anyhow, Context, Result};

use crate::app::App;
use crate::config::Config;
use crate::control::{self, wire::Reply, wire::Request};
use crate::migrate::report::Progress;
use crate::store::{Store, StoreError, StoreOptions};

/// Runs a request on the running server, or directly on the database when no
/// server runs; `progress` sees the progress reports of long requests.
pub fn request(
    cfg: &Config,
    req: Request,
    progress: &mut (dyn FnMut(Progress) + Send),
) -> Result<Reply> {
    if let Some(answer) = control::client::call(&cfg.data_dir, &req, &mut *progress) {
        return Ok(answer?);
    }
    let store = open_store(cfg)?;
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
    answer
}

/// The reply did not fit the request (a server of another version).
pub fn unexpected(reply: Reply) -> anyhow::Error {
    anyhow!("unexpected answer from the server: {reply:?}")
}

/// Opens the store for a one-off command when no server runs.
pub fn open_store(cfg: &Config) -> Result<Store> {
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

/// A one-line progress display on stderr when it is a terminal.
pub struct StatusLine {
    on: bool,
    last: std::time::Instant,
}

impl StatusLine {
    pub fn new() -> StatusLine {
        use std::io::IsTerminal;
        StatusLine {
            on: std::io::stderr().is_terminal(),
            last: std::time::Instant::now(),
        }
    }

    /// Shows `text()` (at most ten times a second).
    pub fn show(&mut self, text: impl FnOnce() -> String) {
        if self.on && self.last.elapsed() > std::time::Duration::from_millis(100) {
            self.last = std::time::Instant::now();
            eprint!("\r\x1b[2K{}", text());
        }
    }

    /// Clears the line.
    pub fn done(&self) {
        if self.on {
            eprint!("\r\x1b[2K");
        }
    }
}
