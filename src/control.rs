//! The control socket: a Unix socket (`data_dir/control.sock`, mode 0600) through
//! which CLI commands reach a running server, since only one process can hold the
//! redb file. One JSON request line in, one JSON response line out. With no server
//! running, the CLI runs the same `execute` against the database directly.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

use crate::store::{Scope, Store, StoreError};

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
    /// A consistent copy of the database to this absolute path.
    Backup {
        out: PathBuf,
    },
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ControlResponse {
    Ok(Value),
    Error(String),
}

pub fn socket_path(data_dir: &Path) -> PathBuf {
    data_dir.join("control.sock")
}

fn rfc3339(t: time::OffsetDateTime) -> String {
    let t = t.replace_millisecond(t.millisecond()).unwrap_or(t);
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

fn token_json(t: &crate::store::TokenRecord, now: &str) -> Value {
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

/// Runs one control request against the store.
pub async fn execute(store: &Store, req: ControlRequest) -> Result<Value, String> {
    let (now, now_ms) = crate::http::now();
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
            let expires = expires_in_days.map(|d| {
                rfc3339(time::OffsetDateTime::now_utc() + time::Duration::days(i64::from(d)))
            });
            let (record, secret, hash) =
                crate::auth::new_token(&name, scope, &now, expires, now_ms)
                    .map_err(|_| "the operating system's random generator failed".to_owned())?;
            let record = store.add_token(record, hash).await.map_err(message)?;
            Ok(json!({"token": token_json(&record, &now), "secret": secret.0}))
        }
        ControlRequest::TokenList => {
            let tokens = store.snapshot().and_then(|s| s.tokens()).map_err(message)?;
            Ok(Value::Array(
                tokens.iter().map(|t| token_json(t, &now)).collect(),
            ))
        }
        ControlRequest::TokenRevoke { name } => {
            let record = store
                .revoke_token(name, now.clone())
                .await
                .map_err(message)?;
            Ok(token_json(&record, &now))
        }
        ControlRequest::Backup { out } => {
            let store = store.clone();
            let path = out.clone();
            let (users, groups) = tokio::task::spawn_blocking(move || store.backup_to(&path))
                .await
                .map_err(|_| "the backup task failed".to_owned())?
                .map_err(message)?;
            Ok(json!({"out": out, "users": users, "groups": groups}))
        }
    }
}

/// Serves the control socket until the task is dropped.
pub async fn serve(data_dir: &Path, store: Store) -> std::io::Result<()> {
    let path = socket_path(data_dir);
    // A socket file left by a killed server: nobody listens on it, remove it.
    if path.exists() && std::os::unix::net::UnixStream::connect(&path).is_err() {
        let _ = std::fs::remove_file(&path);
    }
    let listener = tokio::net::UnixListener::bind(&path)?;
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
    }
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "control socket accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let store = store.clone();
        tokio::spawn(async move {
            let (read, mut write) = stream.into_split();
            let mut line = String::new();
            let mut reader = BufReader::new(read.take(MAX_LINE as u64));
            let response = match reader.read_line(&mut line).await {
                Ok(_) => match serde_json::from_str::<ControlRequest>(&line) {
                    Ok(req) => match execute(&store, req).await {
                        Ok(v) => ControlResponse::Ok(v),
                        Err(e) => ControlResponse::Error(e),
                    },
                    Err(e) => ControlResponse::Error(format!("bad control request: {e}")),
                },
                Err(e) => ControlResponse::Error(format!("cannot read the request: {e}")),
            };
            let mut out = serde_json::to_vec(&response).unwrap_or_default();
            out.push(b'\n');
            let _ = write.write_all(&out).await;
        });
    }
}

/// Sends a request to a running server. `None` when no server listens.
pub fn call(data_dir: &Path, req: &ControlRequest) -> Option<Result<Value, String>> {
    use std::io::{BufRead, Write};
    let stream = std::os::unix::net::UnixStream::connect(socket_path(data_dir)).ok()?;
    let _ = stream.set_read_timeout(Some(Duration::from_secs(30)));
    let mut writer = stream.try_clone().ok()?;
    let mut line = serde_json::to_vec(req).ok()?;
    line.push(b'\n');
    if let Err(e) = writer.write_all(&line) {
        return Some(Err(format!("the control socket failed: {e}")));
    }
    let mut response = String::new();
    if let Err(e) = std::io::BufReader::new(stream).read_line(&mut response) {
        return Some(Err(format!("no answer on the control socket: {e}")));
    }
    match serde_json::from_str::<ControlResponse>(&response) {
        Ok(ControlResponse::Ok(v)) => Some(Ok(v)),
        Ok(ControlResponse::Error(e)) => Some(Err(e)),
        Err(e) => Some(Err(format!("unreadable answer on the control socket: {e}"))),
    }
}
