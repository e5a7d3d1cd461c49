//! `migrate check|push|status|verify|abort|cutover`: the migration state machine,
//! rendered from its typed reports. `check` and `verify` exit with 2 when they find
//! blockers or differences; `--json` prints the report's serde form.

use crate::plural::count;
use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context, Result};

use super::local::{request, unexpected, StatusLine};
use super::{MigrateCommand, PolicyCommand, PolicyFieldName};
use crate::config::Config;
use crate::control::wire::PolicyRequest;
use crate::control::wire::{Reply, Request};
use crate::migrate::policy::{self, PolicyChange, PolicyField};
use crate::migrate::readiness;
use crate::migrate::report::{
    self, Difference, MigrationStatus, Progress, PushOutcome, PushPlan, PushReport, TargetCheck,
};
use crate::migrate::service::PushRequest;
use crate::secret::Secret;
use crate::store::Phase;

/// Exit code of a report that found something to fix.
const FOUND_PROBLEMS: u8 = 2;

pub(super) fn run(cfg: &Config, cmd: &MigrateCommand) -> Result<ExitCode> {
    match cmd {
        MigrateCommand::Check {
            json,
            to,
            token_file,
            cacert,
            allow_http,
        } => {
            let target = match (to, token_file) {
                (Some(to), Some(tf)) => Some(push_request(to, tf, cacert.as_deref(), *allow_http)?),
                _ => None,
            };
            check(cfg, target, *json)
        }
        MigrateCommand::Push {
            to,
            token_file,
            cacert,
            dry_run,
            json,
            allow_http,
            omit_unsupported,
            parallel,
        } => {
            let to = match to {
                Some(to) => to.clone(),
                None => stored_target(cfg)?,
            };
            let mut req = push_request(&to, token_file, cacert.as_deref(), *allow_http)?;
            req.dry_run = *dry_run;
            req.omit_unsupported = *omit_unsupported;
            req.parallel = parallel.map(usize::from);
            push(cfg, req, *json)
        }
        MigrateCommand::Status { json } => status(cfg, *json),
        MigrateCommand::IdMap { json } => id_map(cfg, *json),
        MigrateCommand::Verify {
            json,
            token_file,
            cacert,
        } => {
            let token = token_file.as_deref().map(read_token).transpose()?;
            let cacert = cacert.as_deref().map(read_cacert).transpose()?;
            verify(cfg, token, cacert, *json)
        }
        MigrateCommand::Abort => abort(cfg),
        MigrateCommand::Policy(cmd) => policy(cfg, cmd),
        MigrateCommand::Cutover {
            confirm_irreversible,
        } => cutover(cfg, *confirm_irreversible),
    }
}

/// `migrate check [--to URL --token-file FILE]`: the readiness report and, with a
/// target, what it cannot hold. Exit 2 when either finds something to fix.
fn check(cfg: &Config, target: Option<PushRequest>, json: bool) -> Result<ExitCode> {
    let report = match request(cfg, Request::MigrateCheck, &mut |_| {})? {
        Reply::Readiness(r) => r,
        other => return Err(unexpected(other)),
    };
    let target = match target {
        Some(req) => match request(cfg, Request::MigrateCheckTarget(req), &mut |_| {})? {
            Reply::TargetCheck(t) => Some(t),
            other => return Err(unexpected(other)),
        },
        None => None,
    };
    if json {
        let mut v = serde_json::to_value(&report)?;
        if let Some(t) = &target {
            v["target"] = serde_json::to_value(t)?;
        }
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        print!("{}", readiness::render_text(&report, 50));
        if let Some(t) = &target {
            print_target_check(t);
        }
    }
    let target_ok = target.as_ref().is_none_or(|t| t.unsupported.is_empty());
    Ok(exit_code(report.ready && target_ok))
}

/// Shows a step's progress: a retry's reason stays on screen, the rest overwrite
/// one line.
fn show_progress(line: &mut StatusLine, p: &Progress) {
    if let Progress::Retrying { .. } | Progress::InServer = p {
        line.note(&p.to_string());
    } else {
        line.tick(|| p.to_string())
    }
}

/// `migrate push`: the plan of a dry run (exit 2 when something cannot be pushed),
/// or the push's report (exit 2 when its closing verification found differences);
/// as text, or (`json`) as the JSON of `PushPlan` / `PushReport`.
fn push(cfg: &Config, req: PushRequest, json: bool) -> Result<ExitCode> {
    let mut line = StatusLine::new();
    let reply = request(cfg, Request::MigratePush(req), &mut |p| {
        show_progress(&mut line, &p)
    });
    line.done();
    match reply? {
        Reply::Push(PushOutcome::Planned(plan)) => {
            if json {
                println!("{}", serde_json::to_string_pretty(&plan)?);
            } else {
                print_plan(&plan);
            }
            Ok(exit_code(
                plan.unsupported.is_empty() && plan.blockers.is_empty(),
            ))
        }
        Reply::Push(PushOutcome::Pushed(report)) => {
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print_pushed(&report);
            }
            // The closing verification found differences: not a success.
            Ok(exit_code(report.differences.is_empty()))
        }
        other => Err(unexpected(other)),
    }
}

/// The migration's status from the server.
fn fetch_status(cfg: &Config) -> Result<MigrationStatus> {
    match request(cfg, Request::MigrateStatus, &mut |_| {})? {
        Reply::Status(s) => Ok(*s),
        other => Err(unexpected(other)),
    }
}

/// `migrate push` without `--to`: the target of the migration under way, said on
/// stderr; without one, `--to` is required.
fn stored_target(cfg: &Config) -> Result<String> {
    let status = fetch_status(cfg)?;
    match status.state.target {
        Some(t) if !matches!(status.phase, Phase::NotStarted | Phase::Checked) => {
            eprintln!("target: {t} (the migration's stored target; --to names another)");
            Ok(t)
        }
        _ => anyhow::bail!(
            "no migration is under way, so no target is stored: give it with --to URL"
        ),
    }
}

/// `migrate status [--json]`: where the migration stands.
fn status(cfg: &Config, json: bool) -> Result<ExitCode> {
    let status = fetch_status(cfg)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&status)?);
    } else {
        print_status(&status);
    }
    Ok(ExitCode::SUCCESS)
}

/// `migrate id-map [--json]`: the push's journal as CSV (RFC 4180, a header line)
/// or JSON on stdout; how many on stderr.
fn id_map(cfg: &Config, json: bool) -> Result<ExitCode> {
    let pairs = match request(cfg, Request::MigrateIdMap, &mut |_| {})? {
        Reply::IdMap(p) => p,
        other => return Err(unexpected(other)),
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&pairs)?);
    } else {
        println!("resourceType,name,externalId,id,targetId");
        for p in &pairs {
            println!(
                "{},{},{},{},{}",
                p.resource_type.name(),
                csv_field(&p.name),
                csv_field(p.external_id.as_deref().unwrap_or_default()),
                csv_field(&p.id),
                csv_field(&p.target_id)
            );
        }
    }
    eprintln!(
        "{} pushed to the target",
        count(pairs.len() as u64, "resource", "resources")
    );
    Ok(ExitCode::SUCCESS)
}

/// One CSV field (RFC 4180 §2): quoted, with inner quotes doubled, when it holds a
/// comma, a quote or a line break.
fn csv_field(v: &str) -> std::borrow::Cow<'_, str> {
    if v.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", v.replace('"', "\"\"")).into()
    } else {
        v.into()
    }
}

/// `migrate verify [--token-file FILE] [--cacert FILE]`: every difference between the
/// directory and the target (exit 2 when there is one); `token` and `cacert` for this
/// run only (after the cut-over no token is stored).
fn verify(
    cfg: &Config,
    token: Option<Secret>,
    cacert: Option<String>,
    json: bool,
) -> Result<ExitCode> {
    let mut line = StatusLine::new();
    let reply = request(cfg, Request::MigrateVerify { token, cacert }, &mut |p| {
        show_progress(&mut line, &p)
    });
    line.done();
    let report = match reply? {
        Reply::Verify(r) => r,
        other => return Err(unexpected(other)),
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        for n in &report.notes {
            println!("note: {n}");
        }
        print_extras(&report.only_on_target, &report.not_kept);
        print_differences(&report.differences);
    }
    Ok(exit_code(report.count == 0))
}

/// `migrate abort`: mirroring stops, the bridge stays the source of truth.
fn abort(cfg: &Config) -> Result<ExitCode> {
    match request(cfg, Request::MigrateAbort, &mut |_| {})? {
        Reply::Aborted => {}
        other => return Err(unexpected(other)),
    }
    println!("migration aborted: mirroring stopped, the bridge stays the source of truth");
    Ok(ExitCode::SUCCESS)
}

/// `migrate cutover --confirm-irreversible`: the flip, then how to repoint the
/// identity provider, which happens right after it, never before (the README and
/// the Migration page say the same: until the cut-over this bridge must be the
/// target's only writer). Refused without the confirmation.
fn cutover(cfg: &Config, confirm_irreversible: bool) -> Result<ExitCode> {
    if !confirm_irreversible {
        anyhow::bail!(
            "cut-over is irreversible: afterwards this bridge refuses every SCIM write (410, naming the \
             new SCIM URL). Repoint your identity provider right after it, not before: until then this \
             bridge must be the target's only writer. Re-run with --confirm-irreversible when you can \
             repoint it straight away (stop provisioning in the identity provider just before, and no \
             change is refused in between)"
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
    if let Some(e) = &done.erase_error {
        eprintln!(
            "warning: the database file could not be rewritten without the target's token ({e}); \
             the bridge retries at its next start"
        );
    }
    println!(
        "cut over to {target}. This bridge now refuses SCIM writes (410); reads keep working."
    );
    println!(
        "Repoint your identity provider now (a change it sent since the cut-over was refused; \
         it sends it again once repointed):"
    );
    println!("  Entra ID: Provisioning → Admin Credentials → Tenant URL = {target}, Secret Token = the new service's token; then restart provisioning");
    println!("  Okta:     Provisioning → Integration → SCIM connector base URL = {target}, API token = the new service's token; then retry the failed tasks (Dashboard → Tasks)");
    println!(
        "The target gave every user and group a new id (scimbridge migrate id-map > ids.csv lists \
         both). Entra ID's restart matches them again by userName; Okta keeps the ids this bridge \
         gave it, so its updates to them are answered 404 until it learns the new ones: on the app's \
         Import tab run Import Now (users match by userName) and link each pushed group to the \
         target's group of the same name (Push Groups), then check one test user's change arrives."
    );
    println!(
        "Then decommission the bridge: keep an export (scimbridge export --out FILE) and the id map, \
         revoke its tokens (scimbridge token list, scimbridge token revoke NAME), stop the service, \
         and delete its data directory and backups (they hold token and password hashes)."
    );
    Ok(ExitCode::SUCCESS)
}

/// A target's token from its file (kept out of the process list).
fn read_token(token_file: &Path) -> Result<Secret> {
    let token = std::fs::read_to_string(token_file)
        .with_context(|| format!("cannot read the token file {}", token_file.display()))?;
    let token = Secret::new(token.trim());
    if token.is_empty() {
        anyhow::bail!("the token file {} is empty", token_file.display());
    }
    Ok(token)
}

/// A PEM CA file's text (`--cacert FILE`).
fn read_cacert(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))
}

/// The target, its token (read from a file, kept out of the process list) and CA.
fn push_request(
    to: &str,
    token_file: &Path,
    cacert: Option<&Path>,
    allow_http: bool,
) -> Result<PushRequest> {
    let token = read_token(token_file)?;
    let cacert = cacert.map(read_cacert).transpose()?;
    Ok(PushRequest {
        target: to.to_owned(),
        token,
        cacert,
        allow_http,
        dry_run: false,
        omit_unsupported: false,
        parallel: None,
    })
}

fn print_target_check(t: &TargetCheck) {
    println!("Target {}:", t.target);
    for l in t.capabilities.lines() {
        println!("  {l}");
    }
    print!("{}", report::unsupported_text(&t.unsupported, &t.held_by));
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
    print!("{}", report::plan_text(plan));
}

fn print_pushed(r: &PushReport) {
    println!(
        "pushed {} and {} ({} created, {} updated, {}, {} throttled); now mirroring changes",
        count(r.users, "user", "users"),
        count(r.groups, "group", "groups"),
        r.created,
        r.updated,
        count(r.requests, "request", "requests"),
        r.throttled
    );
    if r.earlier_created + r.earlier_updated > 0 {
        println!(
            "  earlier runs of this migration's push: {} created, {} updated",
            r.earlier_created, r.earlier_updated
        );
    }
    for (rule, n) in &r.rules {
        println!("  {}: {n}", rule.as_str());
    }
    for n in &r.notes {
        println!("  note: {n}");
    }
    print_extras(&r.only_on_target, &r.not_kept);
    if !r.repaired.is_empty() {
        println!(
            "repaired: {} the target held otherwise (changed there since the push?), sent again:",
            count(r.repaired.len() as u64, "resource", "resources")
        );
        for name in r.repaired.iter().take(20) {
            println!("  {name}");
        }
        if r.repaired.len() > 20 {
            println!(
                "  and {} more (all of them with --json)",
                r.repaired.len() - 20
            );
        }
    }
    print_differences(&r.differences);
    if !r.differences.is_empty() {
        println!(
            "fix what the differences above name and run `scimbridge migrate push` again (it sends \
             again every pushed resource the target holds otherwise), or `scimbridge migrate abort` \
             then `scimbridge migrate push ...` to match everything afresh"
        );
    }
}

/// What verify reports besides differences: accounts only the target has, and
/// attributes the target does not keep (once each).
fn print_extras(only: &[String], not_kept: &[String]) {
    if !only.is_empty() {
        println!(
            "{} only on the target (left alone, not counted as differences):",
            count(only.len() as u64, "account", "accounts")
        );
        for o in only {
            println!("  {o}");
        }
    }
    if !not_kept.is_empty() {
        println!("attributes the target does not keep (not counted as differences):");
        for a in not_kept {
            println!("  {a}");
        }
    }
}

fn print_status(s: &MigrationStatus) {
    let st = &s.state;
    println!("migration: {}", s.phase_text);
    if let Some(t) = &st.target {
        println!("target:    {t}");
    }
    let p = &st.progress;
    let d = &s.directory;
    if matches!(s.phase, Phase::NotStarted | Phase::Checked) {
        // Nothing to count against yet: say what a push would send, and how to start.
        println!(
            "pushed:    nothing yet; the directory holds {}, {} and {}",
            count(d.users, "user", "users"),
            count(d.groups, "group", "groups"),
            count(d.memberships, "membership", "memberships")
        );
        println!("next:      {}", next_step(s.phase));
    } else {
        println!(
            "pushed:    {}/{} users, {}/{} groups",
            p.users_done, p.users_total, p.groups_done, p.groups_total
        );
        let problem = s
            .mirror
            .problem()
            .map(|p| format!("; {p}"))
            .unwrap_or_default();
        println!(
            "mirror:    {} behind ({:.1} s){problem}",
            count(s.lag.events, "event", "events"),
            s.lag.seconds
        );
    }
    if st.push_incomplete {
        println!("push:      incomplete; run `scimbridge migrate push` again to finish it");
    }
    if let Some(e) = &st.last_error {
        println!("last error: {e}");
    }
    if let Some(c) = &s.capabilities {
        println!("target capabilities:");
        for l in c.lines() {
            println!("  {l}");
        }
    }
    if !s.rules.is_empty() {
        println!("matching (last push):");
        for (rule, n) in &s.rules {
            println!("  {}: {n}", rule.as_str());
        }
    }
    if !st.refused_filters.is_empty() {
        println!("filters the target refused (skipped):");
        for n in st.refused_filters.values() {
            println!("  {n}");
        }
    }
    if !st.omitted.is_empty() || !st.not_kept.is_empty() {
        println!("not kept by the target:");
        for a in st.omitted.iter().chain(st.not_kept.iter()) {
            println!("  {a}");
        }
    }
}

/// The command to run next before anything was pushed.
fn next_step(phase: Phase) -> &'static str {
    if phase == Phase::NotStarted {
        "`scimbridge migrate check` (readiness), then \
         `scimbridge migrate push --to URL --token-file FILE` (--dry-run first shows the plan)"
    } else {
        "`scimbridge migrate push --to URL --token-file FILE` (--dry-run first shows the plan)"
    }
}

/// The result of reading the target back.
fn print_differences(diffs: &[Difference]) {
    if diffs.is_empty() {
        println!("verified: the target matches the directory");
        return;
    }
    println!(
        "{} between the directory and the target:",
        count(diffs.len() as u64, "difference", "differences")
    );
    for d in diffs {
        println!("  {d}");
    }
}

#[cfg(test)]
mod tests {
    use super::csv_field;

    #[test]
    fn csv_fields_are_quoted_only_when_rfc_4180_needs_it() {
        assert_eq!(csv_field("plain@example.com"), "plain@example.com");
        assert_eq!(csv_field("Sales, EMEA"), "\"Sales, EMEA\"");
        assert_eq!(csv_field("The \"A\" team"), "\"The \"\"A\"\" team\"");
        assert_eq!(csv_field("two\nlines"), "\"two\nlines\"");
        assert_eq!(csv_field(""), "");
    }
}
