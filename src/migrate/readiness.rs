//! `migrate check`: is the directory ready to move to hosted provisioning? Blockers
//! stop a migration (email domains outside the allowed list, public mail domains,
//! users without an email); warnings are worth a look (protected groups the hosted
//! service will not manage, inactive users, duplicate emails). Every finding names
//! the users or groups concerned.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::config::MigrationPolicy;
use crate::scim::schema::ResourceType;
use crate::store::{Snapshot, StoreResult, StoredResource};

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
    snapshot.scan(ResourceType::User, |r| {
        let email = main_email(&r.attrs);
        let subject = user_subject(&r, email.clone());
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
            message: "migration.allowed_domains is empty: list the email domains your hosted provisioning account has verified".into(),
            subjects: vec![],
        });
    }
    let push = |list: &mut Vec<Finding>, code, message: String, subjects: Vec<Subject>| {
        if !subjects.is_empty() {
            list.push(Finding {
                code,
                message,
                subjects,
            });
        }
    };
    push(
        &mut blockers,
        FindingCode::DomainNotAllowed,
        format!(
            "{} users have an email domain outside migration.allowed_domains ({})",
            outside.len(),
            allowed.join(", ")
        ),
        outside,
    );
    push(
        &mut blockers,
        FindingCode::PublicMailDomain,
        format!("{} users use a public mail provider; hosted provisioning needs an address on your own domain", on_public.len()),
        on_public,
    );
    push(
        &mut blockers,
        FindingCode::NoEmail,
        format!("{} users have no email address", no_email.len()),
        no_email,
    );
    let mut warnings = Vec::new();
    push(
        &mut warnings,
        FindingCode::ProtectedGroup,
        format!("{} groups will not be managed by hosted provisioning (they grant recovery or administration)", protected.len()),
        protected,
    );
    push(
        &mut warnings,
        FindingCode::InactiveUser,
        format!("{} users are inactive (suspended)", inactive.len()),
        inactive,
    );
    push(
        &mut warnings,
        FindingCode::DuplicateEmail,
        format!(
            "{} users share an email address with another user",
            duplicates.len()
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

/// The report for a terminal: each finding with up to `limit` names.
pub(crate) fn render_text(r: &ReadinessReport, limit: usize) -> String {
    let mut out = String::new();
    out.push_str(&format!(
        "Migration readiness: {} ({} users, {} groups)\n",
        if r.ready { "READY" } else { "BLOCKED" },
        r.users,
        r.groups
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

    #[test]
    fn domains_are_normalized() {
        assert_eq!(domain_of("A@Example.COM.").as_deref(), Some("example.com"));
        assert_eq!(domain_of("nodomain@"), None);
        assert_eq!(domain_of("no-at-sign"), None);
    }
}
