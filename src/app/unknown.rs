//! The unknown-attribute ledger. Every attribute a SCIM request named that no schema
//! defines is refused (400 `invalidSyntax`) or dropped, as `[scim] unknown_attributes`
//! says; either way it is logged (the first time a name is seen since start, then at
//! debug level), counted in /metrics (`scimbridge_unknown_attributes_total` by
//! action) and listed on the admin dashboard with a declaration the admin can paste
//! into the config to have it stored instead. Bounded: the first [`MAX_NAMES`]
//! distinct names are listed, later ones only counted.
//!
//! Knows nothing of HTTP; the SCIM operations (endpoints and Bulk) call
//! [`UnknownLedger::admit`], the admin dashboard and /metrics read it.

use std::collections::HashMap;
use std::sync::Mutex;

use crate::clock::Timestamp;
use crate::scim::error::ScimResult;
use crate::scim::resource::{UnknownAttr, UnknownAttributes};
use crate::scim::schema::ResourceType;

/// Distinct (resource type, name) pairs kept for the dashboard.
pub(crate) const MAX_NAMES: usize = 200;

/// What the server did with an unknown attribute.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Action {
    Refused,
    Dropped,
}

impl Action {
    /// The metric label (a closed set).
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Action::Refused => "refused",
            Action::Dropped => "dropped",
        }
    }
}

/// One unknown attribute as the dashboard shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Entry {
    pub rt: ResourceType,
    pub name: String,
    pub json_type: &'static str,
    pub multi_valued: bool,
    /// Requests that named it since start.
    pub count: u64,
    pub last_action: Action,
    /// When the last request that named it came.
    pub last_seen: Timestamp,
}

#[derive(Default)]
struct Inner {
    entries: HashMap<(ResourceType, String), Entry>,
    refused: u64,
    dropped: u64,
}

pub(crate) struct UnknownLedger {
    policy: UnknownAttributes,
    inner: Mutex<Inner>,
}

impl UnknownLedger {
    pub(crate) fn new(policy: UnknownAttributes) -> UnknownLedger {
        UnknownLedger {
            policy,
            inner: Mutex::new(Inner::default()),
        }
    }

    pub(crate) fn policy(&self) -> UnknownAttributes {
        self.policy
    }

    /// Records the unknown attributes of one request operation and applies the
    /// policy: `Err` (400 invalidSyntax naming them) under `reject`.
    pub(crate) fn admit(
        &self,
        rt: ResourceType,
        unknown: &[UnknownAttr],
        now: Timestamp,
    ) -> ScimResult<()> {
        if unknown.is_empty() {
            return Ok(());
        }
        let action = match self.policy {
            UnknownAttributes::Reject => Action::Refused,
            UnknownAttributes::Drop => Action::Dropped,
        };
        if let Ok(mut inner) = self.inner.lock() {
            match action {
                Action::Refused => inner.refused += unknown.len() as u64,
                Action::Dropped => inner.dropped += unknown.len() as u64,
            }
            for u in unknown {
                let key = (rt, u.name.clone());
                if let Some(e) = inner.entries.get_mut(&key) {
                    e.count += 1;
                    e.last_action = action;
                    e.last_seen = now;
                    tracing::debug!(resource_type = rt.name(), attribute = %u.name, action = action.as_str(), "unknown attribute");
                    continue;
                }
                tracing::warn!(
                    resource_type = rt.name(),
                    attribute = %u.name,
                    action = action.as_str(),
                    "a SCIM request named an attribute no schema defines; declare a schema \
                     extension for it ([[scim.extensions]], the admin dashboard shows one to paste) \
                     or stop the identity provider from sending it"
                );
                if inner.entries.len() < MAX_NAMES {
                    inner.entries.insert(
                        key,
                        Entry {
                            rt,
                            name: u.name.clone(),
                            json_type: u.json_type,
                            multi_valued: u.multi_valued,
                            count: 1,
                            last_action: action,
                            last_seen: now,
                        },
                    );
                }
            }
        }
        self.policy.check(unknown)
    }

    /// (refused, dropped) attribute counts since start, for /metrics.
    pub(crate) fn totals(&self) -> (u64, u64) {
        self.inner
            .lock()
            .map(|i| (i.refused, i.dropped))
            .unwrap_or_default()
    }

    /// The listed names, most recent first.
    pub(crate) fn entries(&self) -> Vec<Entry> {
        let mut out: Vec<Entry> = self
            .inner
            .lock()
            .map(|i| i.entries.values().cloned().collect())
            .unwrap_or_default();
        out.sort_by(|a, b| b.last_seen.cmp(&a.last_seen).then(a.name.cmp(&b.name)));
        out
    }
}

/// The URN an attribute name is qualified with, and the attribute; `None` for an
/// unqualified name (no extension can hold it under that name).
fn split_urn(name: &str) -> Option<(&str, &str)> {
    if !name
        .get(..4)
        .is_some_and(|p| p.eq_ignore_ascii_case("urn:"))
    {
        return None;
    }
    let (urn, attr) = name.rsplit_once(':')?;
    Some((urn, attr))
}

/// A `[[scim.extensions]]` declaration that would have the attribute stored, for the
/// dashboard. An unqualified name (`favouriteColour`) or a sub-attribute of a core
/// attribute (`name.foo`) cannot be declared as sent: the suggestion puts it under an
/// extension URN that the identity provider's mapping must then use.
pub(crate) fn declaration(e: &Entry) -> String {
    let (urn, attr, note) = match split_urn(&e.name) {
        Some((urn, attr)) if !attr.contains('.') => (urn.to_owned(), attr.to_owned(), None),
        _ => {
            let attr: String = e
                .name
                .rsplit([':', '.'])
                .next()
                .unwrap_or(&e.name)
                .to_owned();
            let urn = format!(
                "urn:ietf:params:scim:schemas:extension:custom:2.0:{}",
                e.rt.name()
            );
            let note = format!(
                "# \"{}\" is not in any schema as sent: map it in the identity provider to\n\
                 # {urn}:{attr}\n",
                e.name
            );
            (urn, attr, Some(note))
        }
    };
    let ty = if e.json_type == "complex" {
        "string"
    } else {
        e.json_type
    };
    let multi = if e.multi_valued {
        ", multi_valued = true"
    } else {
        ""
    };
    format!(
        "{}[[scim.extensions]]\nurn = \"{urn}\"\nresource_type = \"{}\"\nattributes = [\n  {{ name = \"{attr}\", type = \"{ty}\"{multi} }},\n]\n",
        note.unwrap_or_default(),
        e.rt.name()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn t(s: i64) -> Timestamp {
        Timestamp::from_unix_ms(1_800_000_000_000 + s * 1000).unwrap()
    }

    fn unknown(name: &str, v: serde_json::Value) -> UnknownAttr {
        UnknownAttr::new(name.into(), &v)
    }

    #[test]
    fn reject_refuses_and_counts_drop_counts() {
        let l = UnknownLedger::new(UnknownAttributes::Reject);
        let e = l
            .admit(
                ResourceType::User,
                &[unknown("favouriteColour", json!("red"))],
                t(1),
            )
            .unwrap_err();
        assert_eq!(e.status, 400);
        assert!(e.detail.contains("favouriteColour"));
        l.admit(
            ResourceType::User,
            &[unknown("favouriteColour", json!("blue"))],
            t(2),
        )
        .unwrap_err();
        assert_eq!(l.totals(), (2, 0));
        let entries = l.entries();
        assert_eq!((entries[0].count, entries[0].last_seen), (2, t(2)));

        let l = UnknownLedger::new(UnknownAttributes::Drop);
        l.admit(ResourceType::Group, &[unknown("x", json!(1))], t(0))
            .unwrap();
        assert_eq!(l.totals(), (0, 1));
        assert_eq!(l.entries()[0].last_action, Action::Dropped);
    }

    #[test]
    fn the_list_is_bounded_the_counts_are_not() {
        let l = UnknownLedger::new(UnknownAttributes::Drop);
        for i in 0..(MAX_NAMES + 50) {
            l.admit(
                ResourceType::User,
                &[unknown(&format!("a{i}"), json!(1))],
                t(0),
            )
            .unwrap();
        }
        assert_eq!(l.entries().len(), MAX_NAMES);
        assert_eq!(l.totals().1, (MAX_NAMES + 50) as u64);
    }

    #[test]
    fn declarations_paste_into_the_config() {
        let entry = |name: &str, v: serde_json::Value| {
            let u = unknown(name, v);
            Entry {
                rt: ResourceType::User,
                name: u.name,
                json_type: u.json_type,
                multi_valued: u.multi_valued,
                count: 1,
                last_action: Action::Refused,
                last_seen: t(0),
            }
        };
        let d = declaration(&entry(
            "urn:ietf:params:scim:schemas:extension:acme:2.0:User:badge",
            json!(7),
        ));
        assert!(d.contains("urn = \"urn:ietf:params:scim:schemas:extension:acme:2.0:User\""));
        assert!(d.contains("{ name = \"badge\", type = \"integer\" }"));
        let d = declaration(&entry("favouriteColour", json!(["red"])));
        assert!(d.contains("map it in the identity provider"));
        assert!(d.contains("name = \"favouriteColour\", type = \"string\", multi_valued = true"));
        // What the dashboard suggests is a valid declaration.
        let text = d
            .lines()
            .filter(|l| !l.starts_with('#'))
            .collect::<Vec<_>>()
            .join("\n");
        let parsed: toml::Value = toml::from_str(&text).unwrap();
        assert!(
            parsed["scim"]["extensions"][0]["attributes"][0]["name"].as_str()
                == Some("favouriteColour")
        );
    }
}
