//! The control socket: a Unix socket (`data_dir/control.sock`, mode 0600) through
//! which CLI commands reach a running server, since only one process can hold the
//! redb file. `wire` is the protocol (serde of the application layer's typed values),
//! `server` runs requests on the application layer, `client` is the CLI's side. With
//! no server running, the CLI runs the same `execute` against the database directly.
//! An edge: it calls the application layer and is called by nothing but the server
//! bootstrap and the CLI.

pub(crate) mod client;
pub(crate) mod server;
pub(crate) mod wire;

use std::path::{Path, PathBuf};

pub(crate) use server::{bind, execute, serve};

/// The audit caller for a command-line user: the operating-system account of `uid`
/// (from /etc/passwd), or `uid N` when it has no entry.
pub(crate) fn cli_caller(uid: u32) -> crate::app::audit::Caller {
    let name = std::fs::read_to_string("/etc/passwd")
        .ok()
        .and_then(|passwd| {
            passwd.lines().find_map(|line| {
                let mut f = line.split(':');
                let (name, _, id) = (f.next()?, f.next()?, f.next()?);
                (id.parse::<u32>().ok()? == uid).then(|| name.to_owned())
            })
        })
        .unwrap_or_else(|| format!("uid {uid}"));
    crate::app::audit::Caller::cli(&name)
}

/// The uid this process runs as (the owner of `/proc/self`).
pub(crate) fn own_uid() -> Option<u32> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").ok().map(|m| m.uid())
}

/// The control socket's file name in the data directory.
pub(crate) const SOCKET_NAME: &str = "control.sock";

/// Where the control socket lives in a data directory. Bind and connect through
/// `crate::localfs::short_socket_path`, which fits any directory into `sun_path`.
pub(crate) fn socket_path(data_dir: &Path) -> PathBuf {
    data_dir.join(SOCKET_NAME)
}
