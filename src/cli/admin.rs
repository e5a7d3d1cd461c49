//! `admin add|remove|reset-password|list`: the admin page's named accounts. `add`
//! and `reset-password` print a one-time link (valid an hour) that sets the
//! account's password, alone on stdout, with its explanation on stderr. `remove`
//! asks first when stdin is a terminal (as `token revoke` does; `--yes` skips it).

use std::io::IsTerminal;
use std::process::ExitCode;

use anyhow::Result;

use super::local::{request, unexpected};
use super::AdminCommand;
use super::{confirmed, shell_word};
use crate::app::admin::{AccountInfo, SetupLink};
use crate::config::Config;
use crate::control::wire::{Reply, Request};

pub(super) fn run(cfg: &Config, cmd: &AdminCommand) -> Result<ExitCode> {
    match cmd {
        AdminCommand::Add { name } => {
            let req = Request::AdminAdd { name: name.clone() };
            let setup = setup_link(cfg, req)?;
            eprintln!(
                "Added the admin account \"{}\". Open this link within an hour to set its \
                 password (it works once; `scimbridge admin reset-password {0}` prints a new one):",
                setup.account.as_deref().unwrap_or(name)
            );
            print_link(&setup);
        }
        AdminCommand::Remove { name, yes } => {
            // Only a person at a terminal is asked; scripts stay non-interactive.
            let question = format!(
                "Remove the admin account \"{name}\"? It can no longer sign in and its \
                 sessions end (`scimbridge admin add {}` makes it again, with a new password). [y/N] ",
                shell_word(name)
            );
            if !*yes && std::io::stdin().is_terminal() && !confirmed(&question)? {
                eprintln!("not removed");
                return Ok(ExitCode::FAILURE);
            }
            let req = Request::AdminRemove { name: name.clone() };
            let gone = match request(cfg, req, &mut |_| {})? {
                Reply::AdminRemoved(a) => a,
                other => return Err(unexpected(other)),
            };
            println!(
                "removed the admin account \"{}\"; its sessions are ended",
                gone.name
            );
        }
        AdminCommand::ResetPassword { name } => {
            let req = Request::AdminResetPassword { name: name.clone() };
            let setup = setup_link(cfg, req)?;
            match &setup.account {
                Some(account) if setup.password_set => eprintln!(
                    "Open this link within an hour to set a new password for the admin account \
                     \"{account}\" (it works once; the current password keeps working until then, \
                     and the account's sessions end when it is used):"
                ),
                Some(account) => eprintln!(
                    "The admin account \"{account}\" has no password yet (its setup link was never \
                     used), so it cannot sign in. Open this link within an hour to set its password \
                     (it works once; any earlier link of this account no longer works):"
                ),
                None => eprintln!(
                    "No admin account exists yet. Open this link within an hour to create the \
                     first one and set its password (it works once):"
                ),
            }
            print_link(&setup);
        }
        AdminCommand::List { json } => {
            let accounts = match request(cfg, Request::AdminList, &mut |_| {})? {
                Reply::AdminAccounts(a) => a,
                other => return Err(unexpected(other)),
            };
            if *json {
                println!("{}", serde_json::to_string_pretty(&accounts)?);
            } else {
                print!("{}", table(&accounts));
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn setup_link(cfg: &Config, req: Request) -> Result<SetupLink> {
    match request(cfg, req, &mut |_| {})? {
        Reply::SetupLink(s) => Ok(s),
        other => Err(unexpected(other)),
    }
}

fn print_link(setup: &SetupLink) {
    // The one place this secret is meant to be shown.
    match &setup.link {
        Some(link) => println!("{}", link.expose()),
        None => println!("https://HOST:PORT/admin/setup?code={}", setup.code.expose()),
    }
}

/// `admin list` for a terminal.
fn table(accounts: &[AccountInfo]) -> String {
    if accounts.is_empty() {
        return "no admin account yet; `scimbridge admin reset-password` prints the link that \
                creates the first one\n"
            .into();
    }
    let mut out = format!("{:<24} {:<24} PASSWORD\n", "NAME", "CREATED");
    for a in accounts {
        let password = match (a.password_set, a.link_expires) {
            (Some(set), None) => format!("set {set}"),
            (Some(set), Some(until)) => format!("set {set}; reset link valid until {until}"),
            (None, Some(until)) => format!("not set; setup link valid until {until}"),
            (None, None) => "not set; the link expired (admin reset-password NAME)".into(),
        };
        out.push_str(&format!(
            "{:<24} {:<24} {password}\n",
            a.name,
            a.created.to_string()
        ));
    }
    out
}
