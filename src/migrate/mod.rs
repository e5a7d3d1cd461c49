//! Moving the directory elsewhere: the export file format and import (`export`),
//! with readiness checks, the push client and the migration state machine to come.
//! Sits on top of the store; knows nothing of HTTP serving.

pub mod client;
pub mod export;
pub mod push;
pub mod readiness;
pub mod service;
