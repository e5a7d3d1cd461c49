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
pub enum ClientError {
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
}

type Answer = Option<Result<Reply, ClientError>>;

fn io(what: &'static str) -> impl FnOnce(std::io::Error) -> ClientError {
    move |source| ClientError::Io { what, source }
}

/// Connects and sends the request line; `None` when no server listens.
fn open(data_dir: &Path, req: &Request) -> Option<Result<UnixStream, ClientError>> {
    let stream = UnixStream::connect(super::socket_path(data_dir)).ok()?;
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
pub fn call(data_dir: &Path, req: &Request, progress: &mut dyn FnMut(Progress)) -> Answer {
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
pub fn call_stream(
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
pub fn call_import(data_dir: &Path, mut file: std::fs::File, size: u64) -> Answer {
    let stream = match open(data_dir, &Request::Import { size })? {
        Ok(s) => s,
        Err(e) => return Some(Err(e)),
    };
    let result = std::io::copy(&mut file, &mut &stream)
        .map_err(io("sending the file failed"))
        .and_then(|_| answer(&mut std::io::BufReader::new(&stream), &mut |_| {}));
    Some(result)
}
