//! The control socket: a Unix socket (`data_dir/control.sock`, mode 0600) through
//! which CLI commands reach a running server, since only one process can hold the
//! redb file. `wire` is the protocol (serde of the application layer's typed values),
//! `server` runs requests on the application layer, `client` is the CLI's side. With
//! no server running, the CLI runs the same `execute` against the database directly.
//! An edge: it calls the application layer and is called by nothing but the server
//! bootstrap and the CLI.

pub mod client;
pub mod server;
pub mod wire;

use std::path::{Path, PathBuf};

pub use server::{bind, execute, serve, ExecError};

/// The control socket's file name in the data directory.
pub const SOCKET_NAME: &str = "control.sock";

/// Where the control socket lives in a data directory. Bind and connect through
/// `crate::localfs::short_socket_path`, which fits any directory into `sun_path`.
pub fn socket_path(data_dir: &Path) -> PathBuf {
    data_dir.join(SOCKET_NAME)
}
