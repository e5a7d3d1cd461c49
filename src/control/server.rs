//! The server side of the control socket: binds `data_dir/control.sock` (mode
//! 0600), reads one request line per connection, runs it on the application layer
//! (`execute`, which the CLI also runs on the database directly when no server is
//! up) and writes progress lines and the answer. Export, backup and import stream
//! their data. Typed errors become the wire's `Error` line in one place
//! (`ExecError` → `Response`). Knows nothing of HTTP.

use std::path::Path;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};

use super::wire::{self, BackupDone, Imported, PolicyRequest, Reply, Request, Response, Rotated};
use crate::app::admin::{self as credentials, CredentialError};
use crate::app::audit::{Caller, Entry};
use crate::app::tokens::{self, RevokeWhich, TokenError};
use crate::app::App;
use crate::clock::Timestamp;
use crate::migrate::error::MigrateError;
use crate::migrate::export::ExportError;
use crate::migrate::report::{unverified, Progress, ProgressSink, PushOutcome};
use crate::store::{AuditOutcome, Store, StoreError};

/// Every way a control request can fail.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ExecError {
    #[error(transparent)]
    Token(#[from] TokenError),
    #[error(transparent)]
    Credential(#[from] CredentialError),
    #[error(transparent)]
    Migrate(#[from] MigrateError),
    #[error(transparent)]
    Export(#[from] ExportError),
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The request cannot be run this way (a streaming request through `execute`,
    /// a bad request line).
    #[error("{0}")]
    Request(String),
    /// Receiving an import failed.
    #[error("{0}")]
    Io(String),
}

impl ExecError {
    /// How the request ended, for the audit: a migration step says refused, denied
    /// or failed (`MigrateError::audit_outcome`); anything else was refused.
    fn audit_outcome(&self) -> AuditOutcome {
        match self {
            ExecError::Migrate(e) => e.audit_outcome(),
            _ => AuditOutcome::Refused,
        }
    }
}

/// The one place where a failed request becomes a wire line.
impl From<ExecError> for Response {
    fn from(e: ExecError) -> Response {
        Response::Error {
            message: e.to_string(),
        }
    }
}

/// Runs one (non-streaming) request; `progress` receives intermediate reports of
/// long ones.
pub(crate) async fn execute(
    app: &App,
    caller: &Caller,
    req: Request,
    progress: ProgressSink<'_>,
) -> Result<Reply, ExecError> {
    let entry = audit_entry(&req);
    // A long migration step is audited when it starts too (as the Migration page
    // does), so one the server did not live to finish is on record (trial 8 item 27).
    if let Some(e) = entry.as_ref().filter(|_| {
        matches!(&req, Request::MigratePush(p) if !p.dry_run)
            || matches!(
                req,
                Request::MigrateVerify { .. }
                    | Request::MigrateCutover {
                        confirm_irreversible: true
                    }
            )
    }) {
        app.audit(caller, e.started()).await;
    }
    let result = run(app, req, progress).await;
    if let Some(entry) = entry {
        for entry in audit_entries(entry, &result) {
            app.audit(caller, entry).await;
        }
    }
    result
}

/// The audit entries of a request's outcome: a refusal or failure as asked; a token revoked or
/// rotated named by what the store changed (its name and id, whichever the command
/// was given: the trial's `token revoke ID` read as the bare id), one entry per secret
/// revoked, a superseded one as `token.revoke_superseded`.
fn audit_entries(entry: Entry, result: &Result<Reply, ExecError>) -> Vec<Entry> {
    let token = |action: &str, t: &tokens::TokenInfo| {
        Entry::new(action).on("Token", Some(&t.id), Some(&t.name))
    };
    match result {
        // Ran to its end, but the target differs: not done (trial 8 item 27).
        Ok(Reply::Push(PushOutcome::Pushed(r))) if !r.differences.is_empty() => {
            vec![entry.refused(unverified(&r.differences).unwrap_or_default())]
        }
        Ok(Reply::Verify(r)) if !r.differences.is_empty() => {
            vec![entry.refused(unverified(&r.differences).unwrap_or_default())]
        }
        Ok(Reply::TokenRevoked(revoked)) => revoked
            .iter()
            .map(|t| token(tokens::revoke_action(t), t))
            .collect(),
        Ok(Reply::TokenRotated(r)) => vec![token("token.rotate", &r.old)],
        Ok(Reply::TokenIssued(t)) => vec![token("token.issue", &t.token)],
        _ => vec![entry.outcome_as(result, ExecError::audit_outcome)],
    }
}

/// The audit entry of a request that changes something; `None` for reads.
fn audit_entry(req: &Request) -> Option<Entry> {
    Some(match req {
        Request::TokenIssue(r) => Entry::new("token.issue").on("Token", None, Some(&r.name)),
        Request::TokenRevoke { name, .. } => {
            Entry::new("token.revoke").on("Token", None, Some(name))
        }
        Request::TokenRotate { name } => Entry::new("token.rotate").on("Token", None, Some(name)),
        Request::AdminResetPassword { name } => {
            Entry::new("admin.reset_password").on("AdminAccount", None, name.as_deref())
        }
        Request::AdminAdd { name } => Entry::new("admin.add").on("AdminAccount", None, Some(name)),
        Request::AdminRemove { name } => {
            Entry::new("admin.remove").on("AdminAccount", None, Some(name))
        }
        Request::MigrateCheck => Entry::new("migration.check"),
        Request::MigrateCheckTarget(r) => {
            Entry::new("migration.check_target").on("Migration", None, Some(&r.target))
        }
        Request::MigratePush(r) if r.dry_run => {
            Entry::new("migration.push_dry_run").on("Migration", None, Some(&r.target))
        }
        Request::MigratePush(r) => {
            Entry::new("migration.push").on("Migration", None, Some(&r.target))
        }
        Request::MigrateVerify { .. } => Entry::new("migration.verify"),
        Request::MigratePolicy(super::wire::PolicyRequest::Set(_)) => {
            Entry::new("migration.policy_set")
        }
        Request::MigratePolicy(super::wire::PolicyRequest::Reset { .. }) => {
            Entry::new("migration.policy_reset")
        }
        Request::MigratePolicy(super::wire::PolicyRequest::Show) => return None,
        Request::MigrateAbort => Entry::new("migration.abort"),
        Request::MigrateCutover { .. } => Entry::new("migration.cutover"),
        Request::Import { .. } => Entry::new("directory.import"),
        Request::TokenList
        | Request::AdminList
        | Request::MigrateStatus
        | Request::MigrateIdMap
        | Request::Export
        | Request::Backup => return None,
    })
}

async fn run(app: &App, req: Request, progress: ProgressSink<'_>) -> Result<Reply, ExecError> {
    let (store, m) = (&app.store, &app.migration);
    // Token answers show each token's last use from the store: write the uses still
    // held in memory first, so a use seconds ago is not shown as "never".
    if matches!(
        req,
        Request::TokenList | Request::TokenRotate { .. } | Request::TokenRevoke { .. }
    ) {
        app.flush_token_uses().await;
    }
    let now = Timestamp::now();
    Ok(match req {
        Request::TokenIssue(r) => Reply::TokenIssued(tokens::issue(store, r, now).await?),
        Request::TokenList => Reply::Tokens(tokens::list(store, now)?),
        Request::TokenRevoke { name, superseded } => {
            let which = if superseded {
                RevokeWhich::Superseded
            } else {
                RevokeWhich::Only
            };
            Reply::TokenRevoked(tokens::revoke(store, name, which, now).await?)
        }
        Request::TokenRotate { name } => {
            let (old, new) = tokens::rotate(store, name, now).await?;
            Reply::TokenRotated(Rotated { old, new })
        }
        Request::AdminResetPassword { name } => {
            Reply::SetupLink(credentials::reset_password(store, name, now).await?)
        }
        Request::AdminAdd { name } => Reply::SetupLink(credentials::add(store, &name, now).await?),
        Request::AdminRemove { name } => {
            Reply::AdminRemoved(credentials::remove(store, &name).await?)
        }
        Request::AdminList => Reply::AdminAccounts(credentials::list(store, now)?),
        Request::MigrateCheck => Reply::Readiness(m.check().await?),
        Request::MigrateCheckTarget(req) => Reply::TargetCheck(m.check_target(req).await?),
        Request::MigratePush(req) => Reply::Push(m.push(req, progress).await?),
        Request::MigrateStatus => Reply::Status(Box::new(m.status()?)),
        Request::MigrateIdMap => Reply::IdMap(m.id_map()?),
        Request::MigrateVerify { token, cacert } => {
            Reply::Verify(m.verify(token, cacert, progress).await?)
        }
        Request::MigrateAbort => {
            m.abort().await?;
            Reply::Aborted
        }
        Request::MigratePolicy(p) => Reply::Policy(match p {
            PolicyRequest::Show => m.policy_view()?,
            PolicyRequest::Set(change) => m.set_policy(change).await?,
            PolicyRequest::Reset { fields } => m.reset_policy(fields).await?,
        }),
        Request::MigrateCutover {
            confirm_irreversible,
        } => {
            if !confirm_irreversible {
                return Err(MigrateError::NotConfirmed.into());
            }
            Reply::CutOver(m.cutover(progress).await?)
        }
        Request::Export | Request::Import { .. } | Request::Backup => {
            return Err(ExecError::Request(
                "export, import and backup stream their data; use the streaming calls".into(),
            ))
        }
    })
}

async fn send(write: &mut OwnedWriteHalf, r: &Response) -> std::io::Result<()> {
    write.write_all(&wire::line(r)).await
}

/// Writes the answer line and then the export, produced on a blocking thread from
/// one snapshot and handed over through a bounded channel (constant memory).
async fn stream_export(store: &Store, mut write: OwnedWriteHalf) {
    let snapshot = match store.snapshot() {
        Ok(s) => s,
        Err(e) => {
            let _ = send(&mut write, &ExecError::from(e).into()).await;
            return;
        }
    };
    if send(&mut write, &Response::Ok(Box::new(Reply::Streaming)))
        .await
        .is_err()
    {
        return;
    }
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<u8>>(16);
    let now = Timestamp::now();
    let producer = tokio::task::spawn_blocking(move || {
        let sink = ChannelWriter {
            tx,
            buf: Vec::with_capacity(64 * 1024),
        };
        let mut sink = std::io::BufWriter::with_capacity(64 * 1024, sink);
        let r = crate::migrate::export::write_export(&snapshot, &mut sink, now, |_, _| {});
        if let Err(e) = r
            .map(|_| ())
            .and_then(|()| std::io::Write::flush(&mut sink).map_err(Into::into))
        {
            tracing::warn!(error = %e, "export over the control socket stopped");
        }
    });
    while let Some(chunk) = rx.recv().await {
        if write.write_all(&chunk).await.is_err() {
            break;
        }
    }
    drop(rx);
    let _ = producer.await;
}

/// Makes a backup into the data directory (the server may write nowhere else under
/// its sandbox), sends the answer line and then the file, and removes it.
async fn stream_backup(store: &Store, dir: &Path, mut write: OwnedWriteHalf) {
    static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tmp = dir.join(format!("backup-{}-{n}.redb", std::process::id()));
    let (st, path) = (store.clone(), tmp.clone());
    let made = tokio::task::spawn_blocking(move || st.backup_to(&path))
        .await
        .map_err(|_| ExecError::Io("the backup task failed".into()))
        .and_then(|r| r.map_err(ExecError::from));
    let size = std::fs::metadata(&tmp).map(|m| m.len()).unwrap_or(0);
    let ok = made.is_ok();
    let head = match made {
        Ok((users, groups)) => Response::Ok(Box::new(Reply::Backup(BackupDone {
            users,
            groups,
            size,
        }))),
        Err(e) => e.into(),
    };
    if send(&mut write, &head).await.is_ok() && ok {
        if let Ok(mut f) = tokio::fs::File::open(&tmp).await {
            let _ = tokio::io::copy(&mut f, &mut write).await;
        }
    }
    let _ = tokio::fs::remove_file(&tmp).await;
}

/// A `Write` that sends its bytes to an async receiver; blocks when it is behind.
struct ChannelWriter {
    tx: tokio::sync::mpsc::Sender<Vec<u8>>,
    buf: Vec<u8>,
}

impl std::io::Write for ChannelWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= 64 * 1024 {
            self.flush()?;
        }
        Ok(data.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        if !self.buf.is_empty() {
            let chunk = std::mem::take(&mut self.buf);
            self.tx.blocking_send(chunk).map_err(|_| {
                std::io::Error::new(std::io::ErrorKind::BrokenPipe, "the reader went away")
            })?;
        }
        Ok(())
    }
}

/// Receives an export file into the data directory, then imports it.
async fn receive_import(
    store: &Store,
    limits: crate::scim::resource::RequestLimits,
    dir: &Path,
    reader: &mut BufReader<OwnedReadHalf>,
    size: u64,
) -> Result<Reply, ExecError> {
    let tmp = dir.join(format!("import-{}.tmp", std::process::id()));
    let result = async {
        let mut file = tokio::fs::File::create(&tmp)
            .await
            .map_err(|e| ExecError::Io(format!("cannot create {}: {e}", tmp.display())))?;
        let copied = tokio::io::copy(&mut reader.take(size), &mut file)
            .await
            .map_err(|e| ExecError::Io(format!("receiving the file failed: {e}")))?;
        if copied != size {
            return Err(ExecError::Io(format!(
                "the file was cut short: {copied} of {size} bytes arrived"
            )));
        }
        file.sync_all()
            .await
            .map_err(|e| ExecError::Io(e.to_string()))?;
        let (store, path) = (store.clone(), tmp.clone());
        let now = Timestamp::now();
        let report = tokio::task::spawn_blocking(move || {
            crate::migrate::export::import_file(&store, &path, &limits, now)
        })
        .await
        .map_err(|_| ExecError::Io("the import task failed".into()))??;
        Ok(Reply::Imported(Imported {
            counts: report.manifest.counts,
            exported_at: report.manifest.exported_at,
            repaired: report.repaired,
        }))
    }
    .await;
    let _ = tokio::fs::remove_file(&tmp).await;
    result
}

/// Binds the control socket (mode 0600), replacing a stale one left by a killed
/// server. Bound through a short path, so a long data directory cannot push it
/// past `sun_path`'s 108 bytes (issue 11).
pub(crate) fn bind(data_dir: &Path) -> std::io::Result<tokio::net::UnixListener> {
    let path = super::socket_path(data_dir);
    let (short, _dir) = crate::localfs::short_socket_path(data_dir, super::SOCKET_NAME)?;
    if path.exists() && std::os::unix::net::UnixStream::connect(&short).is_err() {
        let _ = std::fs::remove_file(&path);
    }
    let listener = tokio::net::UnixListener::bind(&short)?;
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
    }
    Ok(listener)
}

/// Serves the control socket until the task is dropped.
pub(crate) async fn serve(
    data_dir: &Path,
    listener: tokio::net::UnixListener,
    app: std::sync::Arc<App>,
) {
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "control socket accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let app = app.clone();
        let dir = data_dir.to_owned();
        // Who runs the command (for the audit): the peer's operating-system account.
        let caller = match stream.peer_cred() {
            Ok(c) => super::cli_caller(c.uid()),
            Err(_) => Caller::cli("(unknown)"),
        };
        tokio::spawn(async move {
            let (read, write) = stream.into_split();
            connection(&app, &caller, &dir, BufReader::new(read), write).await;
        });
    }
}

/// One connection: one request, its progress lines and its answer.
async fn connection(
    app: &App,
    caller: &Caller,
    dir: &Path,
    mut reader: BufReader<OwnedReadHalf>,
    mut write: OwnedWriteHalf,
) {
    let mut text = String::new();
    let request = match (&mut reader)
        .take(wire::MAX_LINE as u64)
        .read_line(&mut text)
        .await
    {
        Ok(_) => serde_json::from_str::<Request>(&text)
            .map_err(|e| ExecError::Request(format!("bad control request: {e}"))),
        Err(e) => Err(ExecError::Request(format!("cannot read the request: {e}"))),
    };
    let result = match request {
        Ok(Request::Export) => return stream_export(&app.store, write).await,
        Ok(Request::Backup) => return stream_backup(&app.store, dir, write).await,
        Ok(Request::Import { size }) => {
            let result = receive_import(
                &app.store,
                app.config.limits.request(),
                dir,
                &mut reader,
                size,
            )
            .await;
            if let Some(entry) = audit_entry(&Request::Import { size }) {
                app.audit(caller, entry.outcome(&result)).await;
            }
            result
        }
        Ok(req) => {
            // Progress lines go out while the request runs.
            let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Progress>();
            let mut report = move |p: Progress| {
                let _ = tx.send(p);
            };
            // Trial 8 items 8 and 16: a Ctrl-C of `migrate push` stops the command,
            // not the push.
            if matches!(&req, Request::MigratePush(push) if !push.dry_run) {
                report(Progress::InServer);
            }
            let fut = execute(app, caller, req, &mut report);
            tokio::pin!(fut);
            let result = loop {
                tokio::select! {
                    r = &mut fut => break r,
                    Some(p) = rx.recv() => {
                        let _ = send(&mut write, &Response::Progress(p)).await;
                    }
                }
            };
            while let Ok(p) = rx.try_recv() {
                let _ = send(&mut write, &Response::Progress(p)).await;
            }
            result
        }
        Err(e) => Err(e),
    };
    let response = match result {
        Ok(reply) => Response::Ok(Box::new(reply)),
        Err(e) => e.into(),
    };
    let _ = send(&mut write, &response).await;
}
