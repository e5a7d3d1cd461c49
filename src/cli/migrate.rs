//! `migrate check|push|status|verify|abort|cutover`: the migration state machine,
//! rendered from its typed reports. `check` and `verify` exit with 2 when they find
//! blockers or differences; `--json` prints the report's serde form.

use std::process::ExitCode;

use anyhow::{Context, Result};

use super::local::{request, unexpected, StatusLine};
use super::{MigrateCommand, PolicyCommand, PolicyFieldName};
use crate::config::Config;
use crate::control::wire::PolicyRequest;
use crate::control::wire::{Reply, Request};
use crate::migrate::policy::{self, PolicyChange, PolicyField};
use crate::migrate::readiness;
use crate::migrate::report::{Difference, MigrationStatus, PushOutcome, PushPlan, PushReport};
use crate::migrate::service::PushRequest;
use crate::secret::Secret;

/// Exit code of a report that found something to fix.
const FOUND_PROBLEMS: u8 = 2;

pub fn run(cfg: &Config, cmd: &MigrateCommand) -> Result<ExitCode> {
    match cmd {
        MigrateCommand::Check { json } => {
            let report = match request(cfg, Request::MigrateCheck, &mut |_| {})? {
                Reply::Readiness(r) => r,
                other => return Err(unexpected(other)),
            };
            if *json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print!("{}", readiness::render_text(&report, 50));
            }
            Ok(exit_code(report.ready))
        }
        MigrateCommand::Push {
            to,
            token_file,
            cacert,
            dry_run,
            allow_http,
        } => {
            let token = std::fs::read_to_string(token_file)
                .with_context(|| format!("cannot read the token file {}", token_file.display()))?;
            let token = Secret::new(token.trim());
            if token.is_empty() {
                anyhow::bail!("the token file {} is empty", token_file.display());
            }
            let cacert = match cacert {
                Some(p) => Some(
                    std::fs::read_to_string(p)
                        .with_context(|| format!("cannot read {}", p.display()))?,
                ),
                None => None,
            };
            let req = PushRequest {
                target: to.clone(),
                token,
                cacert,
                allow_http: *allow_http,
                dry_run: *dry_run,
            };
            let mut line = StatusLine::new();
            let reply = request(cfg, Request::MigratePush(req), &mut |p| {
                line.show(|| p.to_string())
            });
            line.done();
            match reply? {
                Reply::Push(PushOutcome::Planned(plan)) => print_plan(&plan),
                Reply::Push(PushOutcome::Pushed(report)) => print_pushed(&report),
                other => return Err(unexpected(other)),
            }
            Ok(ExitCode::SUCCESS)
        }
        MigrateCommand::Status { json } => {
            let status = match request(cfg, Request::MigrateStatus, &mut |_| {})? {
                Reply::Status(s) => s,
                other => return Err(unexpected(other)),
            };
            if *json {
                println!("{}", serde_json::to_string_pretty(&status)?);
            } else {
                print_status(&status);
            }
            Ok(ExitCode::SUCCESS)
        }
        MigrateCommand::Verify { json } => {
            let mut line = StatusLine::new();
            let reply = request(cfg, Request::MigrateVerify, &mut |p| {
                line.show(|| p.to_string())
            });
            line.done();
            let report = match reply? {
                Reply::Verify(r) => r,
                other => return Err(unexpected(other)),
            };
            if *json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print_differences(&report.differences);
            }
            Ok(exit_code(report.count == 0))
        }
        MigrateCommand::Abort => {
            match request(cfg, Request::MigrateAbort, &mut |_| {})? {
                Reply::Aborted => {}
                other => return Err(unexpected(other)),
            }
            println!("migration aborted: mirroring stopped, the bridge stays the source of truth");
            Ok(ExitCode::SUCCESS)
        }
        MigrateCommand::Policy(cmd) => policy(cfg, cmd),
        MigrateCommand::Cutover {
            confirm_irreversible,
        } => {
            if !confirm_irreversible {
                anyhow::bail!(
                    "cut-over is irreversible: afterwards this bridge refuses every SCIM write. \
                     Re-run with --confirm-irreversible once the identity provider is ready to be repointed"
                );
            }
            let req = Request::MigrateCutover {
                confirm_irreversible: true,
            };
            let done = match request(cfg, req, &mut |_| {})? {
                Reply::CutOver(c) => c,
                other => return Err(unexpected(other)),
            };
            let target = done.target.as_deref().unwrap_or("the target");
            println!(
                "cut over to {target}. This bridge now refuses SCIM writes; reads keep working."
            );
            println!("Repoint your identity provider:");
            println!("  Entra ID: Provisioning → Admin Credentials → Tenant URL = {target}, Secret Token = the new service's token");
            println!("  Okta:     Provisioning → Integration → SCIM connector base URL = {target}, API token = the new service's token");
            println!("Then the bridge can be decommissioned (keep an export: scimbridge export --out FILE).");
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// `migrate policy show|set|reset`: every form prints the policy that applies next.
fn policy(cfg: &Config, cmd: &PolicyCommand) -> Result<ExitCode> {
    let (req, json) = match cmd {
        PolicyCommand::Show { json } => (PolicyRequest::Show, *json),
        PolicyCommand::Set {
            allowed_domains,
            public_domains,
            protected_groups,
        } => {
            let change = PolicyChange {
                allowed_domains: allowed_domains.clone(),
                public_domains: public_domains.clone(),
                protected_groups: protected_groups.clone(),
            };
            if change == PolicyChange::default() {
                anyhow::bail!(
                    "nothing to set: give --allowed-domains, --public-domains or --protected-groups"
                );
            }
            (PolicyRequest::Set(change), false)
        }
        PolicyCommand::Reset { fields } => {
            let fields = fields
                .iter()
                .map(|f| match f {
                    PolicyFieldName::AllowedDomains => PolicyField::AllowedDomains,
                    PolicyFieldName::PublicDomains => PolicyField::PublicDomains,
                    PolicyFieldName::ProtectedGroups => PolicyField::ProtectedGroups,
                })
                .collect();
            (PolicyRequest::Reset { fields }, false)
        }
    };
    let view = match request(cfg, Request::MigratePolicy(req), &mut |_| {})? {
        Reply::Policy(v) => v,
        other => return Err(unexpected(other)),
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&view)?);
        return Ok(ExitCode::SUCCESS);
    }
    for (field, v) in view.fields() {
        println!(
            "{:<17} {}  ({})",
            field.key(),
            policy::list(&v.value),
            v.source.as_str()
        );
        if let Some(file) = &v.file_differs {
            println!(
                "{:<17} the config file says {}; the stored value applies",
                "",
                policy::list(file)
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn exit_code(clean: bool) -> ExitCode {
    if clean {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(FOUND_PROBLEMS)
    }
}

fn print_plan(plan: &PushPlan) {
    println!("Plan (dry run, nothing was sent):");
    println!("  target: {}", plan.target);
    for (name, c) in [("users: ", plan.users), ("groups:", plan.groups)] {
        println!(
            "  {name} {} ({} to create, {} to update)",
            c.total, c.create, c.update
        );
    }
    println!("  memberships: {}", plan.memberships);
    println!("  bulk: {}", if plan.bulk { "yes" } else { "no" });
}

fn print_pushed(r: &PushReport) {
    println!(
        "pushed {} users and {} groups ({} created, {} updated, {} requests, {} throttled); now mirroring changes",
        r.users, r.groups, r.created, r.updated, r.requests, r.throttled
    );
    print_differences(&r.differences);
}

fn print_status(s: &MigrationStatus) {
    let st = &s.state;
    println!("migration: {}", s.phase_text);
    if let Some(t) = &st.target {
        println!("target:    {t}");
    }
    let p = &st.progress;
    println!(
        "pushed:    {}/{} users, {}/{} groups",
        p.users_done, p.users_total, p.groups_done, p.groups_total
    );
    println!(
        "mirror:    {} events behind ({:.1} s)",
        s.lag.events, s.lag.seconds
    );
    if let Some(e) = &st.last_error {
        println!("last error: {e}");
    }
}

/// The result of reading the target back.
fn print_differences(diffs: &[Difference]) {
    if diffs.is_empty() {
        println!("verified: the target matches the directory");
        return;
    }
    println!(
        "{} differences between the directory and the target:",
        diffs.len()
    );
    for d in diffs {
        println!("  {d}");
    }
}
