//! The migration policy as one setting (issue 14): allowed email domains, public
//! mail domains and protected groups, each taken from the stored value (set by
//! `scimbridge migrate policy set` or the Migration page), else the config file's
//! `[migration]`, else the default — and shown with where each value came from.
//! Every readiness check reads it afresh, so a change takes effect without a
//! restart. Knows nothing of the edges.

use serde::{Deserialize, Serialize};

use crate::config::MigrationPolicy;
use crate::store::StoredPolicy;

/// Where a policy value came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum Source {
    /// Set with `migrate policy set` or on the Migration page.
    Stored,
    /// The config file's `[migration]`.
    File,
    /// Built in (config/scimbridge.toml lists it).
    Default,
}

impl Source {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Source::Stored => "stored",
            Source::File => "config file",
            Source::Default => "default",
        }
    }
}

/// One field of the policy as it applies.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct PolicyValue {
    pub value: Vec<String>,
    pub source: Source,
    /// The config file's value where a stored value overrides a different one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file_differs: Option<Vec<String>>,
}

/// The policy with its sources: what `migrate policy show` prints and the
/// Migration page shows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct PolicyView {
    pub allowed_domains: PolicyValue,
    pub public_domains: PolicyValue,
    pub protected_groups: PolicyValue,
}

/// One field of the policy, by its config key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum PolicyField {
    AllowedDomains,
    PublicDomains,
    ProtectedGroups,
}

impl PolicyField {
    pub(crate) const ALL: [PolicyField; 3] = [
        PolicyField::AllowedDomains,
        PolicyField::PublicDomains,
        PolicyField::ProtectedGroups,
    ];

    /// The config key (`[migration] allowed_domains`…).
    pub(crate) fn key(self) -> &'static str {
        match self {
            PolicyField::AllowedDomains => "allowed_domains",
            PolicyField::PublicDomains => "public_domains",
            PolicyField::ProtectedGroups => "protected_groups",
        }
    }
}

/// A change to the stored policy: each `Some` replaces that field's stored value.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct PolicyChange {
    #[serde(default)]
    pub allowed_domains: Option<Vec<String>>,
    #[serde(default)]
    pub public_domains: Option<Vec<String>>,
    #[serde(default)]
    pub protected_groups: Option<Vec<String>>,
}

/// A domain an admin typed that cannot be one (the same rule as the config file's).
pub(crate) fn domain_fault(domain: &str) -> Option<String> {
    if domain.is_empty() || domain.contains('@') || domain.contains(char::is_whitespace) {
        Some(format!("\"{domain}\" is not a domain like example.com"))
    } else {
        None
    }
}

impl PolicyChange {
    /// The change with domains trimmed and lowercased and group names trimmed;
    /// an error sentence for a value that cannot be right.
    pub(crate) fn normalised(self) -> Result<PolicyChange, String> {
        let domains = |v: Option<Vec<String>>, key: &str| -> Result<Option<Vec<String>>, String> {
            let Some(v) = v else { return Ok(None) };
            let mut out: Vec<String> = Vec::with_capacity(v.len());
            for d in v {
                let d = d.trim().trim_start_matches('@').to_lowercase();
                if let Some(fault) = domain_fault(&d) {
                    return Err(format!("{key}: {fault}"));
                }
                if !out.contains(&d) {
                    out.push(d);
                }
            }
            Ok(Some(out))
        };
        let protected_groups = match self.protected_groups {
            Some(g) => {
                let mut out: Vec<String> = Vec::with_capacity(g.len());
                for name in g {
                    let name = name.trim().to_owned();
                    if name.is_empty() {
                        return Err("protected_groups: a group name cannot be empty".into());
                    }
                    if !out.contains(&name) {
                        out.push(name);
                    }
                }
                Some(out)
            }
            None => None,
        };
        Ok(PolicyChange {
            allowed_domains: domains(self.allowed_domains, "allowed_domains")?,
            public_domains: domains(self.public_domains, "public_domains")?,
            protected_groups,
        })
    }

    /// Applies the change to a stored policy.
    pub(crate) fn apply(self, stored: &mut StoredPolicy) {
        if let Some(v) = self.allowed_domains {
            stored.allowed_domains = Some(v);
        }
        if let Some(v) = self.public_domains {
            stored.public_domains = Some(v);
        }
        if let Some(v) = self.protected_groups {
            stored.protected_groups = Some(v);
        }
    }
}

/// Forgets the stored value of `fields` (all of them when empty).
pub(crate) fn reset(stored: &mut StoredPolicy, fields: &[PolicyField]) {
    let fields: &[PolicyField] = if fields.is_empty() {
        &PolicyField::ALL
    } else {
        fields
    };
    for f in fields {
        match f {
            PolicyField::AllowedDomains => stored.allowed_domains = None,
            PolicyField::PublicDomains => stored.public_domains = None,
            PolicyField::ProtectedGroups => stored.protected_groups = None,
        }
    }
}

fn resolve_one(stored: &Option<Vec<String>>, file: &[String], default: &[String]) -> PolicyValue {
    match stored {
        Some(v) => PolicyValue {
            value: v.clone(),
            source: Source::Stored,
            file_differs: (file != default && file != v.as_slice()).then(|| file.to_vec()),
        },
        None => PolicyValue {
            value: file.to_vec(),
            source: if file == default {
                Source::Default
            } else {
                Source::File
            },
            file_differs: None,
        },
    }
}

impl PolicyView {
    /// Stored value, else the file's, else the default, field by field. `file` is
    /// the configuration's `[migration]` (defaults where the file says nothing, so a
    /// file value equal to the default counts as the default).
    pub(crate) fn resolve(stored: &StoredPolicy, file: &MigrationPolicy) -> PolicyView {
        let d = MigrationPolicy::default();
        PolicyView {
            allowed_domains: resolve_one(
                &stored.allowed_domains,
                &file.allowed_domains,
                &d.allowed_domains,
            ),
            public_domains: resolve_one(
                &stored.public_domains,
                &file.public_domains,
                &d.public_domains,
            ),
            protected_groups: resolve_one(
                &stored.protected_groups,
                &file.protected_groups,
                &d.protected_groups,
            ),
        }
    }

    /// The policy the readiness check applies.
    pub(crate) fn effective(&self) -> MigrationPolicy {
        MigrationPolicy {
            allowed_domains: self.allowed_domains.value.clone(),
            public_domains: self.public_domains.value.clone(),
            protected_groups: self.protected_groups.value.clone(),
        }
    }

    /// The stored part alone (to compare with another config file).
    pub(crate) fn stored(&self) -> StoredPolicy {
        let s = |v: &PolicyValue| (v.source == Source::Stored).then(|| v.value.clone());
        StoredPolicy {
            allowed_domains: s(&self.allowed_domains),
            public_domains: s(&self.public_domains),
            protected_groups: s(&self.protected_groups),
        }
    }

    /// The fields in `PolicyField` order.
    pub(crate) fn fields(&self) -> [(PolicyField, &PolicyValue); 3] {
        [
            (PolicyField::AllowedDomains, &self.allowed_domains),
            (PolicyField::PublicDomains, &self.public_domains),
            (PolicyField::ProtectedGroups, &self.protected_groups),
        ]
    }

    /// One sentence per field where the config file says something else than the
    /// stored value that applies (logged at start, printed by `check-config`).
    pub(crate) fn file_warnings(&self) -> Vec<String> {
        self.fields()
            .iter()
            .filter_map(|(f, v)| {
                let file = v.file_differs.as_ref()?;
                Some(format!(
                    "[migration] {} in the config file ({}) is not what applies: the value stored \
                     with `scimbridge migrate policy set` or on the Migration page ({}) takes \
                     precedence. `scimbridge migrate policy reset {}` returns to the file's value",
                    f.key(),
                    list(file),
                    list(&v.value),
                    f.key().replace('_', "-"),
                ))
            })
            .collect()
    }
}

/// A list for people: `a, b, c` or `(none)`.
pub(crate) fn list(v: &[String]) -> String {
    if v.is_empty() {
        "(none)".into()
    } else {
        v.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(allowed: &[&str]) -> MigrationPolicy {
        MigrationPolicy {
            allowed_domains: allowed.iter().map(|s| s.to_string()).collect(),
            ..MigrationPolicy::default()
        }
    }

    #[test]
    fn stored_then_file_then_default() {
        let v = PolicyView::resolve(&StoredPolicy::default(), &MigrationPolicy::default());
        assert_eq!(v.allowed_domains.source, Source::Default);
        assert_eq!(v.public_domains.source, Source::Default);
        let v = PolicyView::resolve(&StoredPolicy::default(), &file(&["example.com"]));
        assert_eq!(v.allowed_domains.source, Source::File);
        assert_eq!(v.allowed_domains.value, vec!["example.com"]);
        assert!(v.file_warnings().is_empty());
        let stored = StoredPolicy {
            allowed_domains: Some(vec!["example.org".into()]),
            ..StoredPolicy::default()
        };
        let v = PolicyView::resolve(&stored, &file(&["example.com"]));
        assert_eq!(v.allowed_domains.source, Source::Stored);
        assert_eq!(v.effective().allowed_domains, vec!["example.org"]);
        assert_eq!(v.protected_groups.source, Source::Default);
        let w = v.file_warnings();
        assert_eq!(w.len(), 1);
        assert!(
            w[0].contains("example.com") && w[0].contains("example.org"),
            "{w:?}"
        );
        assert_eq!(v.stored(), stored);
        // The same value in both places is no conflict.
        let v = PolicyView::resolve(&stored, &file(&["example.org"]));
        assert!(v.file_warnings().is_empty());
    }

    #[test]
    fn changes_are_normalised_and_reset_field_by_field() {
        let change = PolicyChange {
            allowed_domains: Some(vec![
                " Example.COM ".into(),
                "@example.org".into(),
                "example.com".into(),
            ]),
            protected_groups: Some(vec![" Owners ".into()]),
            ..PolicyChange::default()
        }
        .normalised()
        .unwrap();
        assert_eq!(
            change.allowed_domains,
            Some(vec!["example.com".to_owned(), "example.org".to_owned()])
        );
        let bad = PolicyChange {
            public_domains: Some(vec!["user@gmail.com".into()]),
            ..PolicyChange::default()
        };
        assert!(bad.normalised().unwrap_err().contains("public_domains"));
        let mut stored = StoredPolicy::default();
        change.apply(&mut stored);
        assert_eq!(stored.protected_groups, Some(vec!["Owners".to_owned()]));
        reset(&mut stored, &[PolicyField::ProtectedGroups]);
        assert!(stored.protected_groups.is_none() && stored.allowed_domains.is_some());
        reset(&mut stored, &[]);
        assert_eq!(stored, StoredPolicy::default());
    }
}
