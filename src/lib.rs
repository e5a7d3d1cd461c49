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
mod version;

/// Entry points of the fuzz targets into parsers of the edges (each edge owns its
/// own); not an API.
#[doc(hidden)]
pub use http::bulk::fuzzing;
