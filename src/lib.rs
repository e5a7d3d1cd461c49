//! scimbridge: a self-hosted SCIM 2.0 bridge. See docs/ARCHITECTURE.md for the layers:
//! `scim` (pure protocol core) ← `store` (redb) ← `auth` ← `http`, `cli` on top.

#![warn(unreachable_pub)]
#![warn(missing_docs)]

mod app;
mod auth;
pub mod cli;
mod clock;
mod config;
mod control;
mod http;
#[cfg(test)]
mod layering;
mod limiter;
#[cfg(unix)]
pub mod localfs;
mod logline;
mod memory;
pub mod migrate;
mod plural;
pub mod scim;
#[cfg(unix)]
mod sdnotify;
mod secret;
mod server;
mod store;
pub mod tls;

/// Entry points of the fuzz targets (`fuzz/targets.rs`, run by cargo-fuzz and by
/// the replay test in `cargo test`) into parsers of the edges, which are not part
/// of the library's API. Not an API either.
#[doc(hidden)]
pub mod fuzzing {
    use crate::scim::error::ScimError;

    /// `POST /Bulk`'s parsing and per-operation checks with nothing executed
    /// (`http::bulk::check_request`): the request's refusal, or one result per
    /// operation.
    pub fn bulk(
        body: &serde_json::Value,
        max_ops: usize,
    ) -> Result<Vec<Result<(), ScimError>>, ScimError> {
        crate::http::bulk::check_request(body, max_ops)
    }
}
