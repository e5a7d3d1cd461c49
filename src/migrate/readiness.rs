//! `migrate check`: is the directory ready to move to hosted provisioning? Blockers
//! stop a migration (email domains outside the allowed list, public mail domains,
//! users without an email, managers that are not in the directory, groups that
//! contain themselves through other groups); warnings are worth a look (protected groups the hosted
//! service will not manage, inactive users, duplicate emails). Every finding names
//! the users or groups concerned.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::clock::Timestamp;
use crate::config::MigrationPolicy;
use crate::plural::count;
use crate::scim::schema::{ResourceType, ENTERPRISE_USER_URN};
use crate::store::{Snapshot, Store, StoreResult, StoredResource};

/// A user or group a finding is about.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) struct Subject {
    #[serde(rename = "resourceType")]
    pub resource_type: ResourceType,
    pub id: String,
    /// userName or displayName.
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
}

/// What a finding is about; its kebab-case name is the stable code scripts match.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum FindingCode {
    /// Blocker: `migration.allowed_domains` is empty.
    AllowedDomainsNotConfigured,
    /// Blocker: users whose email domain is not allowed.
    DomainNotAllowed,
    /// Blocker: users on a public mail provider.
    PublicMailDomain,
    /// Blocker: users without an email.
    NoEmail,
    /// Blocker: users whose manager is no user of this directory (a link to a user
    /// deleted before the bridge cleared such links on delete).
    UnknownManager,
    /// Blocker: groups that contain themselves through other groups (a membership
    /// cycle an import of an older export brought; SCIM writes refuse new ones).
    MembershipCycle,
    /// Warning: groups the hosted service will not manage.
    ProtectedGroup,
    /// Warning: suspended users.
    InactiveUser,
    /// Warning: users sharing an email.
    DuplicateEmail,
}

impl FindingCode {
    /// The code as `--json` prints it, e.g. `public-mail-domain`.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            FindingCode::AllowedDomainsNotConfigured => "allowed-domains-not-configured",
            FindingCode::DomainNotAllowed => "domain-not-allowed",
            FindingCode::PublicMailDomain => "public-mail-domain",
            FindingCode::NoEmail => "no-email",
            FindingCode::UnknownManager => "unknown-manager",
            FindingCode::MembershipCycle => "membership-cycle",
            FindingCode::ProtectedGroup => "protected-group",
            FindingCode::InactiveUser => "inactive-user",
            FindingCode::DuplicateEmail => "duplicate-email",
        }
    }
}

/// One blocker or warning, with every user or group concerned.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) struct Finding {
    pub code: FindingCode,
    pub message: String,
    pub subjects: Vec<Subject>,
    /// Subjects concerned but not listed: 0 in a fresh report (every one is
    /// listed); the stored copy of the last check (`LastCheck`) keeps
    /// `KEPT_SUBJECTS` names per finding and counts the rest here.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub more: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// Names kept per finding in the stored last check: what the Migration page lists;
/// `migrate check --json` runs the check again and lists all.
pub(crate) const KEPT_SUBJECTS: usize = 100;

/// The last readiness check and when it ran, kept in the database so that the
/// Migration page shows it after a restart (issue 14 point 8).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) struct LastCheck {
    pub at: Timestamp,
    pub report: ReadinessReport,
}

impl LastCheck {
    /// Stores `report` as the last check (at most `KEPT_SUBJECTS` names per finding,
    /// so a directory of a million unreachable users stores a small record).
    pub(crate) async fn remember(
        store: &Store,
        at: Timestamp,
        report: &ReadinessReport,
    ) -> StoreResult<()> {
        let mut kept = report.clone();
        for f in kept.blockers.iter_mut().chain(kept.warnings.iter_mut()) {
            if f.subjects.len() > KEPT_SUBJECTS {
                f.more += (f.subjects.len() - KEPT_SUBJECTS) as u64;
                f.subjects.truncate(KEPT_SUBJECTS);
            }
        }
        let check = serde_json::to_value(LastCheck { at, report: kept })?;
        store.set_last_readiness(check).await
    }

    /// The stored last check; `None` when none ran, or when the stored one is not
    /// readable as a report (written by a later release: then it is run again).
    pub(crate) fn load(snapshot: &Snapshot) -> StoreResult<Option<LastCheck>> {
        Ok(snapshot
            .last_readiness()?
            .and_then(|v| serde_json::from_value(v).ok()))
    }
}

/// `migrate check`: ready when there is no blocker.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) struct ReadinessReport {
    pub ready: bool,
    pub users: u64,
    pub groups: u64,
    pub blockers: Vec<Finding>,
    pub warnings: Vec<Finding>,
}

/// The user's email for the hosted service: the primary one, else the work one,
/// else the first.
pub(crate) fn main_email(attrs: &serde_json::Map<String, Value>) -> Option<String> {
    let emails = attrs.get("emails")?.as_array()?;
    let value = |e: &Value| e.get("value").and_then(Value::as_str).map(str::to_owned);
    emails
        .iter()
        .find(|e| e.get("primary") == Some(&Value::Bool(true)))
        .or_else(|| {
            emails
                .iter()
                .find(|e| e.get("type").and_then(Value::as_str) == Some("work"))
        })
        .or_else(|| emails.first())
        .and_then(value)
}

fn domain_of(email: &str) -> Option<String> {
    let (_, d) = email.rsplit_once('@')?;
    let d = d.trim().trim_end_matches('.').to_lowercase();
    (!d.is_empty()).then_some(d)
}

fn user_subject(r: &StoredResource, email: Option<String>) -> Subject {
    Subject {
        resource_type: ResourceType::User,
        id: r.id.clone(),
        name: r
            .attrs
            .get("userName")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned(),
        email,
    }
}

/// Runs every check over one snapshot.
pub(crate) fn check(snapshot: &Snapshot, policy: &MigrationPolicy) -> StoreResult<ReadinessReport> {
    let allowed: Vec<String> = policy
        .allowed_domains
        .iter()
        .map(|d| d.to_lowercase())
        .collect();
    let public: Vec<String> = policy
        .public_domains
        .iter()
        .map(|d| d.to_lowercase())
        .collect();
    let (mut outside, mut on_public, mut no_email, mut inactive) = (vec![], vec![], vec![], vec![]);
    let mut by_email: HashMap<String, Vec<Subject>> = HashMap::new();
    let mut unknown_manager = vec![];
    snapshot.scan(ResourceType::User, |r| {
        let email = main_email(&r.attrs);
        let subject = user_subject(&r, email.clone());
        let manager = r
            .attrs
            .get(ENTERPRISE_USER_URN)
            .and_then(|e| e.get("manager"))
            .and_then(|m| m.get("value"));
        if let Some(m) = manager.and_then(Value::as_str) {
            if snapshot.get(ResourceType::User, m)?.is_none() {
                unknown_manager.push(subject.clone());
            }
        }
        if r.attrs.get("active") == Some(&Value::Bool(false)) {
            inactive.push(subject.clone());
        }
        match email.as_deref().and_then(domain_of) {
            None => no_email.push(subject.clone()),
            Some(domain) => {
                if public.contains(&domain) {
                    on_public.push(subject.clone());
                } else if !allowed.is_empty() && !allowed.contains(&domain) {
                    outside.push(subject.clone());
                }
            }
        }
        if let Some(e) = email {
            by_email.entry(e.to_lowercase()).or_default().push(subject);
        }
        Ok(true)
    })?;
    let mut protected = Vec::new();
    snapshot.scan(ResourceType::Group, |g| {
        let name = g
            .attrs
            .get("displayName")
            .and_then(Value::as_str)
            .unwrap_or_default();
        if policy
            .protected_groups
            .iter()
            .any(|p| p.eq_ignore_ascii_case(name))
        {
            protected.push(Subject {
                resource_type: ResourceType::Group,
                id: g.id.clone(),
                name: name.to_owned(),
                email: None,
            });
        }
        Ok(true)
    })?;
    let (cycles, in_cycles) = membership_cycles(snapshot)?;
    let mut duplicates: Vec<Subject> = by_email
        .into_values()
        .filter(|v| v.len() > 1)
        .flatten()
        .collect();
    duplicates.sort_by(|a, b| a.email.cmp(&b.email).then(a.id.cmp(&b.id)));

    let mut blockers = Vec::new();
    if allowed.is_empty() {
        blockers.push(Finding {
            code: FindingCode::AllowedDomainsNotConfigured,
            message: "migration.allowed_domains is empty: list the email domains your hosted \
                      provisioning account has verified (the Migration page's policy, or \
                      `scimbridge migrate policy set --allowed-domains example.com`)"
                .into(),
            subjects: vec![],
            more: 0,
        });
    }
    let push = |list: &mut Vec<Finding>, code, message: String, subjects: Vec<Subject>| {
        if !subjects.is_empty() {
            list.push(Finding {
                code,
                message,
                subjects,
                more: 0,
            });
        }
    };
    push(
        &mut blockers,
        FindingCode::DomainNotAllowed,
        format!(
            "{} an email domain outside migration.allowed_domains ({})",
            count(outside.len() as u64, "user has", "users have"),
            allowed.join(", ")
        ),
        outside,
    );
    push(
        &mut blockers,
        FindingCode::PublicMailDomain,
        format!(
            "{} a public mail provider; hosted provisioning needs an address on your own domain",
            count(on_public.len() as u64, "user uses", "users use")
        ),
        on_public,
    );
    push(
        &mut blockers,
        FindingCode::NoEmail,
        format!(
            "{} no email address",
            count(no_email.len() as u64, "user has", "users have")
        ),
        no_email,
    );
    push(
        &mut blockers,
        FindingCode::UnknownManager,
        format!(
            "{} a manager that does not exist in this directory (restored by an import of an \
             older export; the push cannot link it): set an existing manager or remove it \
             (from the identity provider, or a SCIM PATCH \"remove\" of \
             {ENTERPRISE_USER_URN}:manager), then check again",
            count(unknown_manager.len() as u64, "user has", "users have")
        ),
        unknown_manager,
    );
    push(
        &mut blockers,
        FindingCode::MembershipCycle,
        format!(
            "{} through other groups ({}; each group a member of the next): hosted \
             provisioning refuses a group that contains itself. Remove one \
             membership of each cycle (in the identity provider, or a SCIM PATCH \
             \"remove\" of members[value eq \"<id>\"] on one of its groups), then check again",
            count(
                in_cycles.len() as u64,
                "group contains itself",
                "groups contain themselves"
            ),
            cycles
        ),
        in_cycles,
    );
    let mut warnings = Vec::new();
    push(
        &mut warnings,
        FindingCode::ProtectedGroup,
        format!("{} not be managed by hosted provisioning (groups that grant recovery or administration)", count(protected.len() as u64, "group will", "groups will")),
        protected,
    );
    push(
        &mut warnings,
        FindingCode::InactiveUser,
        format!(
            "{} inactive (suspended)",
            count(inactive.len() as u64, "user is", "users are")
        ),
        inactive,
    );
    push(
        &mut warnings,
        FindingCode::DuplicateEmail,
        format!(
            "{} an email address with another user",
            count(duplicates.len() as u64, "user shares", "users share")
        ),
        duplicates,
    );
    Ok(ReadinessReport {
        ready: blockers.is_empty(),
        users: snapshot.count(ResourceType::User)?,
        groups: snapshot.count(ResourceType::Group)?,
        blockers,
        warnings,
    })
}

/// Most cycles a finding's message spells out; its subjects list every group.
const SPELLED_CYCLES: usize = 5;

/// The membership cycles among groups (`Snapshot::membership_cycles`): the cycles
/// spelled by name for the message (`"A" → "B" → "A"`, at most [`SPELLED_CYCLES`],
/// then how many more), and every group in one, as subjects.
fn membership_cycles(snapshot: &Snapshot) -> StoreResult<(String, Vec<Subject>)> {
    let cycles = snapshot.membership_cycles()?;
    let mut subjects = Vec::new();
    let mut spelled = Vec::new();
    for (i, cycle) in cycles.iter().enumerate() {
        let mut names = Vec::with_capacity(cycle.len() + 1);
        for id in cycle {
            let name = snapshot
                .name_of(ResourceType::Group, id)?
                .unwrap_or_default();
            names.push(format!("\"{name}\""));
            subjects.push(Subject {
                resource_type: ResourceType::Group,
                id: id.clone(),
                name,
                email: None,
            });
        }
        if i < SPELLED_CYCLES {
            names.push(names[0].clone());
            spelled.push(names.join(" → "));
        }
    }
    if cycles.len() > SPELLED_CYCLES {
        spelled.push(format!(
            "and {} more",
            count((cycles.len() - SPELLED_CYCLES) as u64, "cycle", "cycles")
        ));
    }
    Ok((spelled.join("; "), subjects))
}

/// The report for a terminal: each finding with up to `limit` names.
pub(crate) fn render_text(r: &ReadinessReport, limit: usize) -> String {
    let mut out = String::new();
    out.push_str(&format!(
        "Migration readiness: {} ({}, {})\n",
        if r.ready { "READY" } else { "BLOCKED" },
        count(r.users, "user", "users"),
        count(r.groups, "group", "groups")
    ));
    for (title, list) in [("Blockers", &r.blockers), ("Warnings", &r.warnings)] {
        if list.is_empty() {
            out.push_str(&format!("\n{title}: none\n"));
            continue;
        }
        out.push_str(&format!("\n{title}:\n"));
        for f in list {
            out.push_str(&format!("  [{}] {}\n", f.code.as_str(), f.message));
            for s in f.subjects.iter().take(limit) {
                match &s.email {
                    Some(e) if *e != s.name => out.push_str(&format!(
                        "      {} {} <{}> ({})\n",
                        s.resource_type.name(),
                        s.name,
                        e,
                        s.id
                    )),
                    _ => out.push_str(&format!(
                        "      {} {} ({})\n",
                        s.resource_type.name(),
                        s.name,
                        s.id
                    )),
                }
            }
            if f.subjects.len() > limit {
                out.push_str(&format!(
                    "      … and {} more (--json lists all)\n",
                    f.subjects.len() - limit
                ));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn main_email_prefers_primary_then_work() {
        let a = serde_json::json!({"emails": [{"value": "h@x.org", "type": "home"}, {"value": "w@y.com", "type": "work"}]});
        assert_eq!(
            main_email(a.as_object().unwrap()).as_deref(),
            Some("w@y.com")
        );
        let b = serde_json::json!({"emails": [{"value": "h@x.org", "type": "home", "primary": true}, {"value": "w@y.com", "type": "work"}]});
        assert_eq!(
            main_email(b.as_object().unwrap()).as_deref(),
            Some("h@x.org")
        );
        assert_eq!(main_email(serde_json::json!({}).as_object().unwrap()), None);
    }

    /// A store holding `users` (attributes as stored), the runtime to drive it and
    /// the directory that holds its file.
    fn store_with(
        users: impl IntoIterator<Item = Value>,
    ) -> (tempfile::TempDir, Store, tokio::runtime::Runtime) {
        use crate::store::{Actor, StoreOptions};
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("db.redb"), &StoreOptions::default()).unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        for u in users {
            rt.block_on(store.create(
                ResourceType::User,
                u.as_object().unwrap().clone(),
                vec![],
                Actor::system("test"),
                Timestamp::now(),
                None,
            ))
            .unwrap();
        }
        (dir, store, rt)
    }

    /// One user of each kind reads "1 user has", never "1 users have" (issue 14
    /// point 13); two read in the plural.
    #[test]
    fn findings_count_in_the_right_number() {
        let (_dir, store, _rt) = store_with([
            serde_json::json!({"userName": "no-mail", "active": false}),
            serde_json::json!({"userName": "a", "emails": [{"value": "a@gmail.com"}]}),
            serde_json::json!({"userName": "b", "emails": [{"value": "b@other.org"}]}),
            serde_json::json!({"userName": "c", "emails": [{"value": "c@other.org"}]}),
        ]);
        let policy = MigrationPolicy {
            allowed_domains: vec!["example.com".into()],
            ..MigrationPolicy::default()
        };
        let r = check(&store.snapshot().unwrap(), &policy).unwrap();
        let messages: Vec<&str> = r
            .blockers
            .iter()
            .chain(&r.warnings)
            .map(|f| f.message.as_str())
            .collect();
        let has = |m: &str| messages.iter().any(|x| x.starts_with(m));
        assert!(has("2 users have an email domain outside"), "{messages:?}");
        assert!(has("1 user uses a public mail provider"), "{messages:?}");
        assert!(has("1 user has no email address"), "{messages:?}");
        assert!(has("1 user is inactive"), "{messages:?}");
        assert!(render_text(&r, 5).starts_with("Migration readiness: BLOCKED (4 users, 0 groups)"));
        store.close();
    }

    /// The last check is kept with at most `KEPT_SUBJECTS` names per finding, the
    /// rest counted, and read back as it was stored.
    #[test]
    fn last_check_is_kept_small_and_read_back() {
        let (_dir, store, rt) = store_with(
            (0..KEPT_SUBJECTS + 3).map(|i| serde_json::json!({"userName": format!("u{i}")})),
        );
        assert_eq!(LastCheck::load(&store.snapshot().unwrap()).unwrap(), None);
        let report = check(&store.snapshot().unwrap(), &MigrationPolicy::default()).unwrap();
        let at = Timestamp::now();
        rt.block_on(LastCheck::remember(&store, at, &report))
            .unwrap();
        let kept = LastCheck::load(&store.snapshot().unwrap())
            .unwrap()
            .expect("stored");
        assert_eq!(kept.at, at);
        let no_email = kept
            .report
            .blockers
            .iter()
            .find(|f| f.code == FindingCode::NoEmail)
            .unwrap();
        assert_eq!(no_email.subjects.len(), KEPT_SUBJECTS);
        assert_eq!(no_email.more, 3);
        assert!(no_email.message.starts_with("103 users have no email"));
        assert_eq!(kept.report.users, 103);
        store.close();
    }

    #[test]
    fn domains_are_normalized() {
        assert_eq!(domain_of("A@Example.COM.").as_deref(), Some("example.com"));
        assert_eq!(domain_of("nodomain@"), None);
        assert_eq!(domain_of("no-at-sign"), None);
    }
}
