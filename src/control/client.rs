//! The client side of the control socket, used by the CLI: sends one request to a
//! running server and returns its typed reply, handing progress lines to a callback
//! and streamed data (export, backup) to a writer. Every call answers `None` when no
//! server listens, so the caller can open the database itself. Blocking std I/O: the
//! CLI has no async runtime for this.

use std::io::{BufRead, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use super::wire::{self, Reply, Request, Response};
use crate::migrate::report::Progress;

/// Why a call to the running server failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ClientError {
    /// The server ran the request and refused it; its message says why.
    #[error("{0}")]
    Refused(String),
    /// The socket failed or broke.
    #[error("{what}: {source}")]
    Io {
        what: &'static str,
        source: std::io::Error,
    },
    /// The server answered something this client does not understand.
    #[error("{0}")]
    Protocol(String),
    /// What listens on the socket is not the bridge's user: nothing was sent.
    #[error("{0}")]
    Untrusted(String),
}

type Answer = Option<Result<Reply, ClientError>>;

fn io(what: &'static str) -> impl FnOnce(std::io::Error) -> ClientError {
    move |source| ClientError::Io { what, source }
}

/// Whether the CLI may talk to a server run by `peer`: its own user, or, when the
/// CLI is root, the data directory's owner (issue 11: a socket anyone else serves
/// could capture a push target's token or feed the CLI made-up results).
fn peer_trusted(me: u32, peer: u32, dir_owner: u32) -> bool {
    peer == me || (me == 0 && peer == dir_owner)
}

/// Checks who serves the socket before anything is sent on it.
fn check_peer(data_dir: &Path, stream: &UnixStream) -> Result<(), ClientError> {
    use std::os::unix::fs::MetadataExt;
    let untrusted = |why: String| {
        ClientError::Untrusted(format!(
            "refusing to use the control socket {}: {why}; nothing was sent",
            super::socket_path(data_dir).display()
        ))
    };
    let me = crate::localfs::effective_uid();
    let dir_owner = std::fs::metadata(data_dir)
        .map_err(|e| untrusted(format!("cannot read its directory ({e})")))?
        .uid();
    if me != 0 && dir_owner != me {
        return Err(untrusted(format!(
            "the data directory belongs to {}, not to {}",
            crate::localfs::user_name(dir_owner),
            crate::localfs::user_name(me)
        )));
    }
    let peer = crate::localfs::peer_uid(stream)
        .map_err(|e| untrusted(format!("cannot tell who serves it ({e})")))?;
    if !peer_trusted(me, peer, dir_owner) {
        return Err(untrusted(format!(
            "it is served by {}, neither this user ({}) nor the data directory's owner ({})",
            crate::localfs::user_name(peer),
            crate::localfs::user_name(me),
            crate::localfs::user_name(dir_owner)
        )));
    }
    Ok(())
}

/// Connects, checks the server's user and sends the request line; `None` when no
/// server listens.
fn open(data_dir: &Path, req: &Request) -> Option<Result<UnixStream, ClientError>> {
    let (short, _dir) = crate::localfs::short_socket_path(data_dir, super::SOCKET_NAME).ok()?;
    let stream = UnixStream::connect(short).ok()?;
    if let Err(e) = check_peer(data_dir, &stream) {
        return Some(Err(e));
    }
    Some(
        (&stream)
            .write_all(&wire::line(req))
            .map(|()| stream)
            .map_err(io("the control socket failed")),
    )
}

/// Reads lines until the answer, handing progress lines to `progress`.
fn answer(
    reader: &mut impl BufRead,
    progress: &mut dyn FnMut(Progress),
) -> Result<Reply, ClientError> {
    loop {
        let mut text = String::new();
        let n = reader
            .read_line(&mut text)
            .map_err(io("no answer on the control socket"))?;
        if n == 0 {
            return Err(ClientError::Protocol(
                "the server closed the control socket without an answer".into(),
            ));
        }
        match serde_json::from_str::<Response>(&text) {
            Ok(Response::Progress(p)) => progress(p),
            Ok(Response::Ok(reply)) => return Ok(*reply),
            Ok(Response::Error { message }) => return Err(ClientError::Refused(message)),
            Err(e) => {
                return Err(ClientError::Protocol(format!(
                    "unreadable answer on the control socket: {e}"
                )))
            }
        }
    }
}

/// Sends a request to a running server, handing progress reports to `progress` as
/// they arrive. `None` when no server listens.
pub(crate) fn call(data_dir: &Path, req: &Request, progress: &mut dyn FnMut(Progress)) -> Answer {
    let stream = match open(data_dir, req)? {
        Ok(s) => s,
        Err(e) => return Some(Err(e)),
    };
    // Long requests (a push) send progress lines; only silence is a failure.
    let _ = stream.set_read_timeout(Some(Duration::from_secs(600)));
    Some(answer(&mut std::io::BufReader::new(stream), progress))
}

/// Sends a streaming request (export, backup) and copies the data that follows the
/// answer line to `out`, calling `progress` with the bytes received so far.
pub(crate) fn call_stream(
    data_dir: &Path,
    req: &Request,
    out: &mut dyn Write,
    mut progress: impl FnMut(u64),
) -> Answer {
    let stream = match open(data_dir, req)? {
        Ok(s) => s,
        Err(e) => return Some(Err(e)),
    };
    let mut reader = std::io::BufReader::new(stream);
    let result = answer(&mut reader, &mut |_| {}).and_then(|reply| {
        let mut buf = vec![0u8; 64 * 1024];
        let mut total = 0u64;
        loop {
            let n = reader
                .read(&mut buf)
                .map_err(io("the export stream broke"))?;
            if n == 0 {
                break;
            }
            out.write_all(&buf[..n])
                .map_err(io("writing the export failed"))?;
            total += n as u64;
            progress(total);
        }
        out.flush().map_err(io("writing the export failed"))?;
        Ok(reply)
    });
    Some(result)
}

/// Sends an export file (`size` bytes) to a running server for import. `None` when
/// no server listens.
pub(crate) fn call_import(data_dir: &Path, mut file: std::fs::File, size: u64) -> Answer {
    let stream = match open(data_dir, &Request::Import { size })? {
        Ok(s) => s,
        Err(e) => return Some(Err(e)),
    };
    let result = std::io::copy(&mut file, &mut &stream)
        .map_err(io("sending the file failed"))
        .and_then(|_| answer(&mut std::io::BufReader::new(&stream), &mut |_| {}));
    Some(result)
}

#[cfg(test)]
mod tests {
    use super::peer_trusted;

    #[test]
    fn only_our_user_or_the_directory_owner_for_root_is_trusted() {
        // A user's own server.
        assert!(peer_trusted(1000, 1000, 1000));
        // Root (the packaged admin) talking to the service user's server.
        assert!(peer_trusted(0, 998, 998));
        assert!(peer_trusted(0, 0, 998));
        // Someone else's socket: neither a user nor root trusts it.
        assert!(!peer_trusted(1000, 1001, 1000));
        assert!(!peer_trusted(0, 1001, 998));
        // A user does not trust root's socket in its directory either.
        assert!(!peer_trusted(1000, 0, 1000));
    }
}
