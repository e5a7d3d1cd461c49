//! Nested groups as a user sees them: the groups it belongs to directly and through
//! groups that are members of groups (RFC 7643 §4.1.2 `groups`, `type` direct or
//! indirect), and the version of the user's representation that follows from them.
//!
//! Computed when a user is read, from the `member_of` rows: the cost depends on how
//! many groups the user is in (directly or not), never on how many members those
//! groups have, so nesting a group of 100,000 users rewrites nothing. The walk is
//! breadth-first, visits each group once (cycles end), and stops at
//! [`MAX_GROUPS_PER_USER`]. Works on read snapshots (which keep the groups they
//! read: [`GroupNode`]) and inside the writer's transaction alike ([`GroupSource`]).

use std::cell::RefCell;
use std::collections::HashSet;
use std::sync::Arc;

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
    pub group: Arc<GroupNode>,
    pub indirect: bool,
}

/// A group as the walk needs it: its head, and the groups it is a direct member of
/// (its MEMBER_OF rows, in id order). Immutable for one snapshot, so a snapshot
/// keeps the ones it read (`Snapshot::group_node`): users share groups, and at
/// 1,000,000 users a GET by id read each of its groups' rows again (issue 10).
#[derive(Debug)]
pub(super) struct GroupNode {
    pub head: GroupHead,
    pub parents: Vec<String>,
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

/// Where the walk reads groups from: a read snapshot (which keeps the groups it
/// read) or the writer's transaction.
pub(super) trait GroupSource {
    /// The groups `member` is a direct member of, in id order (its MEMBER_OF rows).
    fn groups_of(&self, member: &str) -> StoreResult<Vec<String>>;
    /// Group `id` with its parents; `None` when it does not exist.
    fn group(&self, id: &str) -> StoreResult<Option<Arc<GroupNode>>>;
}

/// Reads group `id` and its parents from the tables (`groups` opened on first use).
pub(super) fn read_node<G: ReadableTable<&'static str, &'static [u8]>>(
    member_of: &impl ReadableTable<(&'static str, &'static str), ()>,
    groups: &G,
    id: &str,
) -> StoreResult<Option<GroupNode>> {
    let Some(record) = groups.get(id)? else {
        return Ok(None);
    };
    let head: GroupHead = serde_json::from_slice(record.value())?;
    let parents = group_rows(member_of, id)?;
    Ok(Some(GroupNode { head, parents }))
}

/// [`GroupSource`] over open tables, reading every group each time (the writer's
/// transaction). `open_groups` opens the GROUPS table, called only for a member of
/// some group (most users are in none, and opening a table is a lookup in redb's
/// table tree: issue 10).
pub(super) struct Tables<M, G, F> {
    pub member_of: M,
    pub open_groups: RefCell<Option<F>>,
    pub groups: RefCell<Option<G>>,
}

impl<M, G, F> Tables<M, G, F>
where
    M: ReadableTable<(&'static str, &'static str), ()>,
    G: ReadableTable<&'static str, &'static [u8]>,
    F: FnOnce() -> StoreResult<G>,
{
    pub(super) fn new(member_of: M, open_groups: F) -> Self {
        Tables {
            member_of,
            open_groups: RefCell::new(Some(open_groups)),
            groups: RefCell::new(None),
        }
    }
}

impl<M, G, F> GroupSource for Tables<M, G, F>
where
    M: ReadableTable<(&'static str, &'static str), ()>,
    G: ReadableTable<&'static str, &'static [u8]>,
    F: FnOnce() -> StoreResult<G>,
{
    fn groups_of(&self, member: &str) -> StoreResult<Vec<String>> {
        group_rows(&self.member_of, member)
    }

    fn group(&self, id: &str) -> StoreResult<Option<Arc<GroupNode>>> {
        if let Some(open) = self.open_groups.borrow_mut().take() {
            *self.groups.borrow_mut() = Some(open()?);
        }
        let groups = self.groups.borrow();
        let Some(groups) = groups.as_ref() else {
            return Ok(None);
        };
        Ok(read_node(&self.member_of, groups, id)?.map(Arc::new))
    }
}

/// The groups `id` belongs to: direct ones first (in id order), then each level of
/// nesting.
pub(super) fn memberships(source: &impl GroupSource, id: &str) -> StoreResult<Vec<Membership>> {
    let mut out: Vec<Membership> = Vec::new();
    let mut seen: HashSet<String> = HashSet::new();
    let mut level: Vec<String> = source.groups_of(id)?;
    let mut indirect = false;
    while !level.is_empty() {
        let mut next = Vec::new();
        for g in level {
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
            let Some(group) = source.group(&g)? else {
                continue;
            };
            next.extend(group.parents.iter().cloned());
            out.push(Membership { group, indirect });
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
            id: m.group.head.id.clone(),
            rt: ResourceType::Group,
            display: m.group.head.display_name().map(str::to_owned),
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
        .map(|m| (m.group.head.id.as_str(), m.group.head.meta.version))
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
