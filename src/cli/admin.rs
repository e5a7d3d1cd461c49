//! `admin reset-password`: prints a one-time link to set a new admin password.

use std::process::ExitCode;

use anyhow::Result;

use super::local::{request, unexpected};
use crate::config::Config;
use crate::control::wire::{Reply, Request};

pub(super) fn reset_password(cfg: &Config) -> Result<ExitCode> {
    let setup = match request(cfg, Request::AdminResetPassword, &mut |_| {})? {
        Reply::SetupLink(s) => s,
        other => return Err(unexpected(other)),
    };
    eprintln!(
        "Open this link within an hour to set a new admin password (it works once; \
         the current password keeps working until then):"
    );
    // The one place this secret is meant to be shown.
    match &setup.link {
        Some(link) => println!("{}", link.expose()),
        None => println!("https://HOST:PORT/admin/setup?code={}", setup.code.expose()),
    }
    Ok(ExitCode::SUCCESS)
}
