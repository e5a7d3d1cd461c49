//! Nested groups as a user sees them: the groups it belongs to directly and through
//! groups that are members of groups (RFC 7643 §4.1.2 `groups`, `type` direct or
//! indirect), and the version of the user's representation that follows from them.
//!
//! Computed when a user is read, from the `member_of` rows: the cost depends on how
//! many groups the user is in (directly or not), never on how many members those
//! groups have, so nesting a group of 100,000 users rewrites nothing. The walk is
//! breadth-first, visits each group once (cycles end), and stops at
//! [`MAX_GROUPS_PER_USER`]. Works on read snapshots and inside the writer's
//! transaction alike (any `ReadableTable`).

use std::collections::HashSet;

use redb::ReadableTable;

use super::{group_rows, StoreResult};
use crate::scim::resource::{Meta, Reference};
use crate::scim::schema::ResourceType;

/// Most groups one user is shown in; a bound on the read's work that no real
/// directory reaches (the walk logs a warning if one does).
pub(super) const MAX_GROUPS_PER_USER: usize = 4096;

/// One group a user belongs to, with what its representation depends on.
#[derive(Debug, Clone)]
pub(super) struct Membership {
    pub group: GroupHead,
    pub indirect: bool,
}

/// What a user's representation needs of a group: its id, meta and display name.
/// Parsed from the group's stored record without building its other attributes
/// (issue 10: a user's read parses each of its groups).
#[derive(Debug, Clone, serde::Deserialize)]
pub(super) struct GroupHead {
    pub id: String,
    pub meta: Meta,
    attrs: HeadAttrs,
}

#[derive(Debug, Clone, serde::Deserialize)]
struct HeadAttrs {
    /// A stored `displayName` is a string; anything else is shown as no name.
    #[serde(rename = "displayName")]
    display_name: Option<serde_json::Value>,
}

impl GroupHead {
    fn display_name(&self) -> Option<&str> {
        self.attrs
            .display_name
            .as_ref()
            .and_then(serde_json::Value::as_str)
    }
}

/// The groups `id` belongs to: direct ones first (in id order), then each level of
/// nesting. `member_of` is the MEMBER_OF table; `open_groups` opens the GROUPS
/// table, called only for a member of some group (most reads are of users in none,
/// and opening a table is a lookup in redb's table tree: issue 10).
pub(super) fn memberships<G: ReadableTable<&'static str, &'static [u8]>>(
    member_of: &impl ReadableTable<(&'static str, &'static str), ()>,
    open_groups: impl FnOnce() -> StoreResult<G>,
    id: &str,
) -> StoreResult<Vec<Membership>> {
    let mut open_groups = Some(open_groups);
    let mut groups: Option<G> = None;
    let mut out: Vec<Membership> = Vec::new();
    let mut seen: HashSet<String> = HashSet::new();
    let mut level: Vec<String> = vec![id.to_owned()];
    let mut indirect = false;
    while !level.is_empty() {
        let mut next = Vec::new();
        for member in &level {
            for g in group_rows(member_of, member)? {
                if g == id || !seen.insert(g.clone()) {
                    continue;
                }
                if out.len() >= MAX_GROUPS_PER_USER {
                    tracing::warn!(
                        user = id,
                        limit = MAX_GROUPS_PER_USER,
                        "a user is in more groups (directly or nested) than are shown"
                    );
                    return Ok(out);
                }
                if let Some(open) = open_groups.take() {
                    groups = Some(open()?);
                }
                let Some(groups) = &groups else {
                    continue;
                };
                let Some(record) = groups.get(g.as_str())? else {
                    continue;
                };
                let group: GroupHead = serde_json::from_slice(record.value())?;
                out.push(Membership { group, indirect });
                next.push(g);
            }
        }
        level = next;
        indirect = true;
    }
    Ok(out)
}

/// The references a user's `groups` attribute shows.
pub(super) fn references(ms: &[Membership]) -> Vec<Reference> {
    ms.iter()
        .map(|m| Reference {
            id: m.group.id.clone(),
            rt: ResourceType::Group,
            display: m.group.display_name().map(str::to_owned),
            indirect: m.indirect,
        })
        .collect()
}

/// A user's representation changes when it does or when any of its groups does (a
/// group's version moves on rename, membership change and deletion of a member):
/// the ETag carries a digest of the groups' ids and versions. `lastModified` stays
/// the user's own (RFC 7643 §3.1: when the resource was last modified; `groups` is
/// read-only and derived from the groups, whose own lastModified moves), so a GET,
/// a list, a filter on `meta.lastModified` and an export all read the same time.
pub(super) fn derive_user_meta(meta: &mut Meta, ms: &[Membership]) {
    if ms.is_empty() {
        meta.groups_tag = None;
        return;
    }
    let mut parts: Vec<(&str, u64)> = ms
        .iter()
        .map(|m| (m.group.id.as_str(), m.group.meta.version))
        .collect();
    parts.sort_unstable();
    let mut h = Fnv::default();
    for (id, version) in parts {
        h.write(id.as_bytes());
        h.write(&[0]);
        h.write(&version.to_le_bytes());
    }
    meta.groups_tag = Some(h.0);
}

/// FNV-1a, 64 bits: a stable digest (the same on every run and release, unlike the
/// standard library's hasher), which an ETag must be.
struct Fnv(u64);

impl Default for Fnv {
    fn default() -> Self {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
}

impl Fnv {
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 ^= u64::from(*b);
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
    }
}
