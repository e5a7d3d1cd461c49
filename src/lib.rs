//! scimbridge: a self-hosted SCIM 2.0 bridge. See docs/ARCHITECTURE.md for the layers.

pub mod scim;
pub mod store;
