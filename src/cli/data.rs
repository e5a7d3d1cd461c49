//! `export`, `import` and `backup`: the directory as a file. With a server running
//! the data streams over the control socket and this process reads or writes the
//! file (the sandboxed service never needs access to the admin's paths); without
//! one, the database is opened directly. Files are written to `FILE.partial`, synced
//! and renamed, so a failed run leaves no half file under the final name; errors
//! name `FILE`, the file the user asked for.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{anyhow, Context, Result};

use super::local::{open_store, unexpected, Fresh, IfMissing, StatusLine};
use crate::clock::Timestamp;
use crate::config::Config;
use crate::control::client;
use crate::control::wire::{Reply, Request};
use crate::migrate::export;
use crate::plural::count;

/// `export --out FILE [--force]` (or `-` for stdout). A file is checked as it is
/// written (the checks of `export::verify`: every line a record of the format, the
/// counts, the SHA-256), synced, and only then renamed into place. An existing
/// `FILE` is replaced only with `force`, as `backup` does (trial 7 item 9: it was
/// overwritten silently).
pub(super) fn export(cfg: &Config, out: &Path, force: bool) -> Result<ExitCode> {
    if out.as_os_str() == "-" {
        let mut sink = std::io::BufWriter::new(std::io::stdout().lock());
        return write_export(cfg, &mut sink).map(|()| ExitCode::SUCCESS);
    }
    refuse_existing(out, force)?;
    let (partial, f) = create_partial(out)?;
    let mut sink = export::VerifyingWriter::new(std::io::BufWriter::with_capacity(256 * 1024, f));
    let written = write_export(cfg, &mut sink);
    // A failed check fails the write it happened in: then the check names the cause.
    let check_failed = sink.check_failed();
    let checked = match (written, sink.finish()) {
        (Err(e), _) if !check_failed => Err(e),
        (_, Err(e)) => Err(anyhow!("the written export does not verify: {e}")),
        (written, Ok(done)) => written.map(|()| done),
    };
    let manifest = checked
        .and_then(|(file, manifest)| {
            let file = file.into_inner().map_err(|e| e.into_error())?;
            file.sync_all()?;
            drop(file);
            std::fs::rename(&partial, out)
                .with_context(|| format!("cannot write {}", out.display()))?;
            Ok(manifest)
        })
        .inspect_err(|_| {
            let _ = std::fs::remove_file(&partial);
        })?;
    eprintln!(
        "exported {} to {}",
        counts_text(&manifest.counts),
        out.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// Streams the export into `sink`: from a running server over the control socket,
/// or from the database opened here.
fn write_export(cfg: &Config, sink: &mut dyn Write) -> Result<()> {
    let mut line = StatusLine::new();
    let streamed = client::call_stream(&cfg.data_dir, &Request::Export, sink, |bytes| {
        line.show(|| {
            format!(
                "exporting from the running server… {:.1} MiB",
                bytes as f64 / 1048576.0
            )
        })
    });
    let result = match streamed {
        Some(r) => r
            .map_err(anyhow::Error::from)
            .and_then(|reply| match reply {
                Reply::Streaming => Ok(()),
                other => Err(unexpected(other)),
            }),
        None => {
            let now = Timestamp::now();
            open_store(cfg, IfMissing::Refuse, false).and_then(|store| {
                let r = store
                    .snapshot()
                    .map_err(anyhow::Error::from)
                    .and_then(|snap| {
                        export::write_export(&snap, &mut *sink, now, |done, total| {
                            line.show(|| format!("exporting… {done}/{total} records"))
                        })
                        .map_err(anyhow::Error::from)
                    })
                    .and_then(|_| sink.flush().map_err(anyhow::Error::from));
                store.close();
                r
            })
        }
    };
    line.done();
    result
}

/// `import FILE`: restores an export into an empty bridge.
pub(super) fn import(cfg: &Config, file: &Path) -> Result<ExitCode> {
    let opened = std::fs::File::open(file).and_then(|f| Ok((f.metadata()?.len(), f)));
    let (size, f) = opened.with_context(|| format!("cannot read {}", file.display()))?;
    let (counts, repaired) = match client::call_import(&cfg.data_dir, f, size) {
        Some(answer) => match answer? {
            Reply::Imported(i) => (i.counts, i.repaired),
            other => return Err(unexpected(other)),
        },
        None => {
            // Records are checked as a create would check them, so the declared
            // schema extensions must be known, as in `serve`.
            crate::scim::schema::install_extensions(&cfg.scim.extensions)
                .map_err(|e| anyhow::anyhow!(e))?;
            let fresh = Fresh::before_open(cfg);
            let store = open_store(cfg, IfMissing::Create, false)?;
            let r = export::import_file(&store, file, &cfg.limits.request(), Timestamp::now());
            store.close();
            // A refused import into a new data directory leaves no empty database
            // behind (the next command would take it for a bridge with no data), nor
            // the directory it made.
            if r.is_err() {
                fresh.undo(cfg);
            }
            let r = r?;
            (r.manifest.counts, r.repaired)
        }
    };
    println!("imported {} from {}", counts_text(&counts), file.display());
    // An older export may hold what the current rules forbid: repaired and listed.
    for note in repaired {
        eprintln!("repaired: {note}");
    }
    Ok(ExitCode::SUCCESS)
}

/// Refuses to write over an existing `out` unless `force` (a mistyped name must not
/// destroy the one good copy).
fn refuse_existing(out: &Path, force: bool) -> Result<()> {
    if !force && std::fs::symlink_metadata(out).is_ok() {
        anyhow::bail!(
            "{} already exists; choose another name, or pass --force to replace it",
            out.display()
        );
    }
    Ok(())
}

/// `backup --out FILE [--force]`: from a running server over the control socket (the
/// server makes the copy in its data directory and streams it), or directly. An
/// existing `FILE` is replaced only with `force` (a mistyped name must not destroy
/// the one good copy).
pub(super) fn backup(cfg: &Config, out: &Path, force: bool) -> Result<ExitCode> {
    let given = out;
    let out = std::path::absolute(out).with_context(|| format!("bad path {}", out.display()))?;
    if out == std::path::absolute(cfg.db_path()).unwrap_or_default() {
        anyhow::bail!("--out must not be the live database file");
    }
    refuse_existing(given, force)?;
    let (partial, mut file) = create_partial(given)?;
    let partial = std::path::absolute(&partial).unwrap_or(partial);
    let streamed = client::call_stream(&cfg.data_dir, &Request::Backup, &mut file, |_| {});
    let counts = match streamed {
        Some(r) => r
            .map_err(anyhow::Error::from)
            .and_then(|reply| match reply {
                Reply::Backup(b) => Ok((b.users, b.groups)),
                other => Err(unexpected(other)),
            }),
        None => {
            drop(file);
            open_store(cfg, IfMissing::Refuse, false).and_then(|store| {
                let r = store.backup_to(&partial).map_err(anyhow::Error::from);
                store.close();
                r
            })
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
        "backup written to {} ({}, {})",
        out.display(),
        count(users, "user", "users"),
        count(groups, "group", "groups")
    );
    Ok(ExitCode::SUCCESS)
}

/// Creates (mode 0600) the file `out` is written to before it is renamed into place,
/// `OUT.partial`. A failure names `out`, and the directory when that is missing.
fn create_partial(out: &Path) -> Result<(PathBuf, std::fs::File)> {
    let mut name = out.as_os_str().to_owned();
    name.push(".partial");
    let partial = PathBuf::from(name);
    match crate::localfs::create_private(&partial) {
        Ok(f) => Ok((partial, f)),
        Err(e) => match out
            .parent()
            .filter(|d| !d.as_os_str().is_empty() && !d.is_dir())
        {
            Some(dir) => Err(anyhow!(
                "cannot write {}: the directory {} does not exist",
                out.display(),
                dir.display()
            )),
            None => Err(anyhow!(e).context(format!("cannot write {}", out.display()))),
        },
    }
}

/// "25 users, 2 groups and 1 membership": an export's or import's counts.
fn counts_text(c: &export::Counts) -> String {
    format!(
        "{}, {} and {}",
        count(c.users, "user", "users"),
        count(c.groups, "group", "groups"),
        count(c.memberships, "membership", "memberships")
    )
}
