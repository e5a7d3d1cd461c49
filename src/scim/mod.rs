//! The SCIM 2.0 protocol core (RFC 7643, RFC 7644): schemas, attribute paths,
//! validation, projection, filters and PATCH. Pure: no IO, no async, no clock (times
//! are passed in). Depends on nothing else of ours.

pub mod discovery;
pub mod error;
pub mod filter;
pub mod patch;
pub mod path;
#[cfg(test)]
mod properties;
pub mod query;
pub mod resource;
pub mod schema;
pub mod text;
