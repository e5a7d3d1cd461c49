//! scimbridge: a self-hosted SCIM 2.0 bridge. See docs/ARCHITECTURE.md for the layers:
//! `scim` (pure protocol core) ← `store` (redb) ← `auth` ← `http`, `cli` on top.

pub mod app;
pub mod auth;
pub mod cli;
pub mod clock;
pub mod config;
pub mod control;
pub mod http;
#[cfg(test)]
mod layering;
pub mod limiter;
#[cfg(unix)]
pub mod localfs;
pub mod logline;
pub mod memory;
pub mod migrate;
pub mod plural;
pub mod scim;
#[cfg(unix)]
pub mod sdnotify;
pub mod secret;
pub mod server;
pub mod store;
pub mod tls;
