//! The control socket: a Unix socket (`data_dir/control.sock`, mode 0600) through
//! which CLI commands reach a running server, since only one process can hold the
//! redb file. One JSON request line in, one JSON response line out. With no server
//! running, the CLI runs the same `execute` against the database directly.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

use crate::clock::Timestamp;
use crate::migrate::service::{Migration, PushRequest};
use crate::store::{Scope, Store, StoreError};

/// Longest token lifetime (ten years); also keeps the date arithmetic in range.
pub const MAX_TOKEN_DAYS: u32 = 3650;

/// Largest request line accepted on the socket.
const MAX_LINE: usize = 64 * 1024;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "kebab-case")]
pub enum ControlRequest {
    TokenIssue {
        name: String,
        read_only: bool,
        expires_in_days: Option<u32>,
    },
    TokenList,
    TokenRevoke {
        name: String,
    },
    /// A consistent copy of the database, streamed back after the response line.
    Backup,
    /// The migration readiness report.
    MigrateCheck,
    MigratePush(PushRequest),
    MigrateStatus,
    MigrateVerify,
    MigrateAbort,
    MigrateCutover {
        confirm_irreversible: bool,
    },
    /// The export file, streamed back after the response line.
    Export,
    /// An export file of `size` bytes follows the request line; import it.
    Import {
        size: u64,
    },
    /// A new one-time setup code for the admin password (the link, when the server
    /// has announced its admin URL).
    AdminResetPassword,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ControlResponse {
    /// An intermediate report of a long request; more lines follow.
    Progress(Value),
    Ok(Value),
    Error(String),
}

pub fn socket_path(data_dir: &Path) -> PathBuf {
    data_dir.join("control.sock")
}

fn token_json(t: &crate::store::TokenRecord, now: Timestamp) -> Value {
    json!({
        "id": t.id, "name": t.name, "scope": t.scope.as_str(), "state": t.state(now),
        "created": t.created, "lastUsed": t.last_used, "expires": t.expires, "revoked": t.revoked,
    })
}

fn message(e: StoreError) -> String {
    match e {
        StoreError::Scim(s) => s.detail,
        other => other.to_string(),
    }
}

/// Runs one control request; `progress` receives intermediate reports of long ones.
pub async fn execute(
    m: &Migration,
    req: ControlRequest,
    progress: &mut (dyn FnMut(Value) + Send),
) -> Result<Value, String> {
    let store = &m.store;
    let now = Timestamp::now();
    match req {
        ControlRequest::TokenIssue {
            name,
            read_only,
            expires_in_days,
        } => {
            let name = name.trim().to_owned();
            if name.is_empty() || name.len() > 100 || name.chars().any(char::is_control) {
                return Err("the token name must be 1 to 100 printable characters".into());
            }
            let scope = if read_only {
                Scope::ReadOnly
            } else {
                Scope::ReadWrite
            };
            if expires_in_days.is_some_and(|d| d > MAX_TOKEN_DAYS) {
                return Err(format!(
                    "a token may expire in at most {MAX_TOKEN_DAYS} days"
                ));
            }
            let expires =
                expires_in_days.map(|d| now.saturating_add(time::Duration::days(i64::from(d))));
            let (record, secret, hash) = crate::auth::new_token(&name, scope, now, expires)
                .map_err(|_| "the operating system's random generator failed".to_owned())?;
            let record = store.add_token(record, hash).await.map_err(message)?;
            Ok(json!({"token": token_json(&record, now), "secret": secret.0}))
        }
        ControlRequest::AdminResetPassword => {
            let (code, hash) = crate::auth::admin::new_setup_code()
                .map_err(|_| "the operating system's random generator failed".to_owned())?;
            let expires = now.saturating_add(crate::auth::admin::SETUP_CODE_LIFETIME);
            store
                .set_admin_setup_code(crate::store::SetupCode {
                    hash,
                    expires,
                    from_reset: true,
                })
                .await
                .map_err(message)?;
            let url = store
                .snapshot()
                .and_then(|s| s.admin_url())
                .map_err(message)?;
            let link = url.map(|u| format!("{u}/setup?code={}", code.0));
            Ok(json!({"code": code.0, "link": link, "expiresMs": expires.unix_ms()}))
        }
        ControlRequest::TokenList => {
            let tokens = store.snapshot().and_then(|s| s.tokens()).map_err(message)?;
            Ok(Value::Array(
                tokens.iter().map(|t| token_json(t, now)).collect(),
            ))
        }
        ControlRequest::TokenRevoke { name } => {
            let record = store.revoke_token(name, now).await.map_err(message)?;
            Ok(token_json(&record, now))
        }
        ControlRequest::MigrateCheck => {
            let report = m.check().await?;
            serde_json::to_value(report).map_err(|e| e.to_string())
        }
        ControlRequest::MigratePush(req) => m.push(req, progress).await,
        ControlRequest::MigrateStatus => m.status(),
        ControlRequest::MigrateVerify => m.verify(progress).await,
        ControlRequest::MigrateAbort => m.abort().await,
        ControlRequest::MigrateCutover {
            confirm_irreversible,
        } => {
            if !confirm_irreversible {
                return Err("cut-over is irreversible: confirm it explicitly".into());
            }
            m.cutover(progress).await
        }
        ControlRequest::Export | ControlRequest::Import { .. } | ControlRequest::Backup => {
            Err("export, import and backup stream their data; use the streaming calls".into())
        }
    }
}

/// Writes the response line and then the export, produced on a blocking thread from
/// one snapshot and handed over through a bounded channel (constant memory).
async fn stream_export(store: &Store, mut write: tokio::net::unix::OwnedWriteHalf) {
    let snapshot = match store.snapshot() {
        Ok(s) => s,
        Err(e) => {
            let mut out =
                serde_json::to_vec(&ControlResponse::Error(message(e))).unwrap_or_default();
            out.push(b'\n');
            let _ = write.write_all(&out).await;
            return;
        }
    };
    let mut head =
        serde_json::to_vec(&ControlResponse::Ok(json!({"streaming": true}))).unwrap_or_default();
    head.push(b'\n');
    if write.write_all(&head).await.is_err() {
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
/// its sandbox), sends the response line and then the file, and removes it.
async fn stream_backup(store: &Store, dir: &Path, mut write: tokio::net::unix::OwnedWriteHalf) {
    static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tmp = dir.join(format!("backup-{}-{n}.redb", std::process::id()));
    let (st, path) = (store.clone(), tmp.clone());
    let made = tokio::task::spawn_blocking(move || st.backup_to(&path))
        .await
        .map_err(|_| "the backup task failed".to_owned())
        .and_then(|r| r.map_err(message));
    let size = std::fs::metadata(&tmp).map(|m| m.len()).unwrap_or(0);
    let head = match &made {
        Ok((users, groups)) => {
            ControlResponse::Ok(json!({"users": users, "groups": groups, "size": size}))
        }
        Err(e) => ControlResponse::Error(e.clone()),
    };
    let mut line = serde_json::to_vec(&head).unwrap_or_default();
    line.push(b'\n');
    if write.write_all(&line).await.is_ok() && made.is_ok() {
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
    dir: &Path,
    reader: &mut BufReader<tokio::net::unix::OwnedReadHalf>,
    size: u64,
) -> Result<Value, String> {
    let tmp = dir.join(format!("import-{}.tmp", std::process::id()));
    let result = async {
        let mut file = tokio::fs::File::create(&tmp)
            .await
            .map_err(|e| format!("cannot create {}: {e}", tmp.display()))?;
        let copied = tokio::io::copy(&mut reader.take(size), &mut file)
            .await
            .map_err(|e| format!("receiving the file failed: {e}"))?;
        if copied != size {
            return Err(format!(
                "the file was cut short: {copied} of {size} bytes arrived"
            ));
        }
        file.sync_all().await.map_err(|e| e.to_string())?;
        let (store, path) = (store.clone(), tmp.clone());
        let now = Timestamp::now();
        let imported = tokio::task::spawn_blocking(move || {
            crate::migrate::export::import_file(&store, &path, now)
        })
        .await
        .map_err(|_| "the import task failed".to_owned())??;
        Ok(crate::migrate::export::imported_json(&imported))
    }
    .await;
    let _ = tokio::fs::remove_file(&tmp).await;
    result
}

/// Binds the control socket (mode 0600), replacing a stale one left by a killed
/// server.
pub fn bind(data_dir: &Path) -> std::io::Result<tokio::net::UnixListener> {
    let path = socket_path(data_dir);
    if path.exists() && std::os::unix::net::UnixStream::connect(&path).is_err() {
        let _ = std::fs::remove_file(&path);
    }
    let listener = tokio::net::UnixListener::bind(&path)?;
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
    }
    Ok(listener)
}

/// Serves the control socket until the task is dropped.
pub async fn serve(
    data_dir: &Path,
    listener: tokio::net::UnixListener,
    migration: std::sync::Arc<Migration>,
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
        let m = migration.clone();
        let store = migration.store.clone();
        let dir = data_dir.to_owned();
        tokio::spawn(async move {
            let (read, mut write) = stream.into_split();
            let mut line = String::new();
            let mut reader = BufReader::new(read);
            let request = match (&mut reader)
                .take(MAX_LINE as u64)
                .read_line(&mut line)
                .await
            {
                Ok(_) => serde_json::from_str::<ControlRequest>(&line)
                    .map_err(|e| format!("bad control request: {e}")),
                Err(e) => Err(format!("cannot read the request: {e}")),
            };
            let response = match request {
                Ok(ControlRequest::Export) => {
                    stream_export(&store, write).await;
                    return;
                }
                Ok(ControlRequest::Backup) => {
                    stream_backup(&store, &dir, write).await;
                    return;
                }
                Ok(ControlRequest::Import { size }) => {
                    receive_import(&store, &dir, &mut reader, size).await
                }
                Ok(req) => {
                    // Progress lines go out while the request runs.
                    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Value>();
                    let mut report = move |v: Value| {
                        let _ = tx.send(v);
                    };
                    let fut = execute(&m, req, &mut report);
                    tokio::pin!(fut);
                    let result = loop {
                        tokio::select! {
                            r = &mut fut => break r,
                            Some(p) = rx.recv() => {
                                let mut out = serde_json::to_vec(&ControlResponse::Progress(p)).unwrap_or_default();
                                out.push(b'\n');
                                let _ = write.write_all(&out).await;
                            }
                        }
                    };
                    while let Ok(p) = rx.try_recv() {
                        let mut out =
                            serde_json::to_vec(&ControlResponse::Progress(p)).unwrap_or_default();
                        out.push(b'\n');
                        let _ = write.write_all(&out).await;
                    }
                    result
                }
                Err(e) => Err(e),
            };
            let response = match response {
                Ok(v) => ControlResponse::Ok(v),
                Err(e) => ControlResponse::Error(e),
            };
            let mut out = serde_json::to_vec(&response).unwrap_or_default();
            out.push(b'\n');
            let _ = write.write_all(&out).await;
        });
    }
}

/// Sends a streaming request (export, backup) to a running server and copies the
/// data that follows the response line to `out`, calling `progress` with the bytes
/// received. Returns the response line's value. `None` when no server listens.
pub fn call_stream(
    data_dir: &Path,
    req: &ControlRequest,
    out: &mut dyn std::io::Write,
    mut progress: impl FnMut(u64),
) -> Option<Result<Value, String>> {
    use std::io::{BufRead, Read, Write};
    let stream = std::os::unix::net::UnixStream::connect(socket_path(data_dir)).ok()?;
    let mut writer = stream.try_clone().ok()?;
    let mut line = serde_json::to_vec(req).ok()?;
    line.push(b'\n');
    if let Err(e) = writer.write_all(&line) {
        return Some(Err(format!("the control socket failed: {e}")));
    }
    let mut reader = std::io::BufReader::new(stream);
    let mut head = String::new();
    if let Err(e) = reader.read_line(&mut head) {
        return Some(Err(format!("no answer on the control socket: {e}")));
    }
    let value = match serde_json::from_str::<ControlResponse>(&head) {
        Ok(ControlResponse::Ok(v)) => v,
        Ok(ControlResponse::Progress(_)) => return Some(Err("unexpected progress line".into())),
        Ok(ControlResponse::Error(e)) => return Some(Err(e)),
        Err(e) => return Some(Err(format!("unreadable answer on the control socket: {e}"))),
    };
    let mut buf = vec![0u8; 64 * 1024];
    let mut total = 0u64;
    loop {
        match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                if let Err(e) = out.write_all(&buf[..n]) {
                    return Some(Err(format!("writing the export failed: {e}")));
                }
                total += n as u64;
                progress(total);
            }
            Err(e) => return Some(Err(format!("the export stream broke: {e}"))),
        }
    }
    Some(
        out.flush()
            .map(|()| value)
            .map_err(|e| format!("writing the export failed: {e}")),
    )
}

/// Sends an export file to a running server for import. `None` when no server listens.
pub fn call_import(data_dir: &Path, file: &Path) -> Option<Result<Value, String>> {
    use std::io::{BufRead, Write};
    let stream = std::os::unix::net::UnixStream::connect(socket_path(data_dir)).ok()?;
    let mut writer = stream.try_clone().ok()?;
    let result = (|| {
        let mut f = std::fs::File::open(file)
            .map_err(|e| format!("cannot read {}: {e}", file.display()))?;
        let size = f.metadata().map_err(|e| e.to_string())?.len();
        let mut line =
            serde_json::to_vec(&ControlRequest::Import { size }).map_err(|e| e.to_string())?;
        line.push(b'\n');
        writer.write_all(&line).map_err(|e| e.to_string())?;
        std::io::copy(&mut f, &mut writer).map_err(|e| format!("sending the file failed: {e}"))?;
        let mut response = String::new();
        std::io::BufReader::new(stream)
            .read_line(&mut response)
            .map_err(|e| format!("no answer on the control socket: {e}"))?;
        match serde_json::from_str::<ControlResponse>(&response) {
            Ok(ControlResponse::Ok(v)) => Ok(v),
            Ok(ControlResponse::Progress(_)) => Err("unexpected progress line".into()),
            Ok(ControlResponse::Error(e)) => Err(e),
            Err(e) => Err(format!("unreadable answer on the control socket: {e}")),
        }
    })();
    Some(result)
}

/// Sends a request to a running server. `None` when no server listens.
pub fn call(data_dir: &Path, req: &ControlRequest) -> Option<Result<Value, String>> {
    call_with_progress(data_dir, req, &mut |_| {})
}

/// `call`, handing progress reports to `progress` as they arrive.
pub fn call_with_progress(
    data_dir: &Path,
    req: &ControlRequest,
    progress: &mut dyn FnMut(Value),
) -> Option<Result<Value, String>> {
    use std::io::{BufRead, Write};
    let stream = std::os::unix::net::UnixStream::connect(socket_path(data_dir)).ok()?;
    // Long requests (a push) send progress lines; only silence is a failure.
    let _ = stream.set_read_timeout(Some(Duration::from_secs(600)));
    let mut writer = stream.try_clone().ok()?;
    let mut line = serde_json::to_vec(req).ok()?;
    line.push(b'\n');
    if let Err(e) = writer.write_all(&line) {
        return Some(Err(format!("the control socket failed: {e}")));
    }
    let mut reader = std::io::BufReader::new(stream);
    loop {
        let mut response = String::new();
        match reader.read_line(&mut response) {
            Ok(0) => {
                return Some(Err(
                    "the server closed the control socket without an answer".into(),
                ))
            }
            Ok(_) => {}
            Err(e) => return Some(Err(format!("no answer on the control socket: {e}"))),
        }
        match serde_json::from_str::<ControlResponse>(&response) {
            Ok(ControlResponse::Progress(p)) => progress(p),
            Ok(ControlResponse::Ok(v)) => return Some(Ok(v)),
            Ok(ControlResponse::Error(e)) => return Some(Err(e)),
            Err(e) => return Some(Err(format!("unreadable answer on the control socket: {e}"))),
        }
    }
}
