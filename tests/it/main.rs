//! The integration tests, in one binary (one link instead of one per file, as
//! BurntSushi/ripgrep's `tests/tests.rs`). Each module is one area and starts the real
//! `scimbridge` binary on 127.0.0.1 over real TLS through `support`; tests are named
//! after what they guard, so `cargo test scim_api::` or `cargo test patch_` picks an
//! area or a concern. Fixtures of real IdP traffic live in `tests/fixtures/`.

mod support;

mod acme;
mod admin_accounts;
mod admin_activity;
mod admin_browser;
mod admin_http;
mod admin_lists;
mod admin_liveness;
mod admin_migration;
mod cli_data_dir;
mod crash_safety;
mod disk_full;
mod export_import;
mod fuzz_replay;
mod hardening;
mod hostile;
mod idp_replay;
mod local_trust;
mod migration_check;
mod migration_hostile;
mod migration_policy;
mod migration_push;
mod migration_quirks;
mod migration_recovery;
mod operations;
mod scim_api;
mod scim_rules;
mod scim_semantics;
mod store_upgrade;
mod systemd_unit;
