//! Moving the directory elsewhere: the export file format and import (`export`),
//! readiness checks (`readiness`), the SCIM client for the target (`client`), the
//! push, mirror and read-back (`push`), and the state machine every edge calls
//! (`service::Migration`, the migration facade). Results are typed (`report`), and
//! so are errors (`error::MigrateError`). Sits on top of the store; knows nothing of
//! HTTP serving, the control socket or the CLI.

pub(crate) mod client;
pub(crate) mod error;
pub mod export;
pub(crate) mod policy;
pub(crate) mod push;
pub(crate) mod readiness;
pub(crate) mod report;
pub(crate) mod service;
pub(crate) mod target;
