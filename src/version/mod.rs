//! The version this binary shows (`--version`, the start-up log, the admin page's
//! Health card): the crate's version, plus the git commit and "dirty" for a build
//! from a checkout that is not exactly a release (`describe`, run by `build.rs`).
//! Interfaces that need a plain version number (the export file's `source_version`,
//! the migration client's User-Agent) keep `CARGO_PKG_VERSION`.

#[cfg(test)]
mod describe;

/// E.g. `0.1.0`, or `0.1.0 (git 0123456789ab, dirty)` for an unreleased build.
pub(crate) const VERSION: &str = env!("SCIMBRIDGE_VERSION");
