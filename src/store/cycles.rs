//! Membership cycles among groups: a group that contains itself through other groups
//! (A a member of B and B a member of A, or longer).
//!
//! RFC 7643 §4.2 allows groups as members of groups and says nothing of cycles, but
//! what a cycle means is nonsense (every user of A is indirectly in A), and the
//! hosted services a directory migrates to refuse it: Microsoft Entra ID does not
//! support circular group nesting, Google Workspace refuses a cyclic membership,
//! Okta and AWS IAM Identity Center take no nested groups at all. Entra ID and Okta
//! never send one (they provision no nested groups). So the SCIM write that would
//! close a cycle is refused ([`refuse_closing`]: 400 `invalidValue` naming the
//! cycle), as a group that names itself as a member already is; an import keeps
//! what an older release stored, and `migrate check` names every cycle
//! ([`Snapshot::membership_cycles`]).
//!
//! Both walk the `member_of` rows of groups only: the cost is the number of groups
//! above the one written (refusal) or of group-in-group memberships (the check),
//! never the number of users.

use std::collections::{HashMap, HashSet};

use redb::{ReadableTable, WriteTransaction};

use super::{group_rows, own_name_in, Member, Snapshot, StoreResult, GROUP_IDS, MEMBER_OF};
use crate::scim::error::ScimError;
use crate::scim::schema::ResourceType;

/// Refuses (400 `invalidValue`) adding the groups among `added` to `group`'s members
/// when one of them already contains `group`, directly or through other groups: the
/// message names the cycle it would close, each group a member of the next. Users
/// among `added` cost nothing; groups cost one walk up from `group`.
pub(super) fn refuse_closing(
    txn: &WriteTransaction,
    group: &str,
    added: &[Member],
) -> StoreResult<()> {
    let mut groups = added
        .iter()
        .filter(|(_, rt, _)| *rt == ResourceType::Group)
        .map(|(id, _, _)| id.as_str())
        .peekable();
    if groups.peek().is_none() {
        return Ok(());
    }
    // Every group above `group`, with the group below it on the way up from `group`.
    let below = {
        let member_of = txn.open_table(MEMBER_OF)?;
        let mut below: HashMap<String, String> = HashMap::new();
        let mut level = vec![group.to_owned()];
        while !level.is_empty() {
            let mut next = Vec::new();
            for g in &level {
                for parent in group_rows(&member_of, g)? {
                    if parent != group && !below.contains_key(&parent) {
                        below.insert(parent.clone(), g.clone());
                        next.push(parent);
                    }
                }
            }
            level = next;
        }
        below
    };
    let Some(closing) = groups.find(|g| below.contains_key(*g)) else {
        return Ok(());
    };
    // group → … → closing (each a member of the next), then closing → group.
    let mut path = vec![closing.to_owned()];
    let mut cur = closing;
    while cur != group {
        cur = below[cur].as_str();
        path.push(cur.to_owned());
    }
    path.reverse();
    path.push(group.to_owned());
    let mut names = Vec::with_capacity(path.len());
    for id in &path {
        names.push(shown(own_name_in(txn, ResourceType::Group, id)?, id));
    }
    let (group_name, closing_name) = (&names[0], &names[names.len() - 2]);
    Err(ScimError::invalid_value(format!(
        "the group {closing_name} cannot be a member of {group_name}: {group_name} is \
         already a member of it, so the membership cycle {} would form (each group a \
         member of the next). A group cannot contain itself, directly or through other \
         groups; remove one of those memberships first",
        names.join(" → ")
    ))
    .into())
}

/// A group's name as a message shows it: `"Name"`, or its id when it has none.
fn shown(name: Option<String>, id: &str) -> String {
    match name {
        Some(n) => format!("\"{n}\""),
        None => id.to_owned(),
    }
}

impl Snapshot {
    /// Every membership cycle among groups, as group ids in order, each a member of
    /// the next and the last a member of the first: one cycle per set of groups that
    /// contain one another (a strongly connected component of "is a member of"),
    /// starting at its smallest id, shortest way round. Ordered by that first id.
    /// Reads each group's `member_of` rows once; memory holds the group-in-group
    /// memberships only.
    pub(crate) fn membership_cycles(&self) -> StoreResult<Vec<Vec<String>>> {
        let member_of = self.txn.open_table(MEMBER_OF)?;
        let mut parents: HashMap<String, Vec<String>> = HashMap::new();
        for row in self.txn.open_table(GROUP_IDS)?.iter()? {
            let (k, _) = row?;
            let up = group_rows(&member_of, k.value())?;
            if !up.is_empty() {
                parents.insert(k.value().to_owned(), up);
            }
        }
        let mut cycles: Vec<Vec<String>> = components(&parents)
            .into_iter()
            .filter_map(|c| shortest_cycle(&parents, &c))
            .collect();
        cycles.sort();
        Ok(cycles)
    }
}

/// The strongly connected components of the graph `edges` (node → the nodes it
/// points to) with more than one node or an edge to itself: Tarjan's algorithm,
/// iterative so a long chain of nested groups cannot overflow the stack.
fn components(edges: &HashMap<String, Vec<String>>) -> Vec<HashSet<String>> {
    struct State<'a> {
        index: HashMap<&'a str, usize>,
        low: HashMap<&'a str, usize>,
        on_stack: HashSet<&'a str>,
        stack: Vec<&'a str>,
    }
    let mut st = State {
        index: HashMap::new(),
        low: HashMap::new(),
        on_stack: HashSet::new(),
        stack: Vec::new(),
    };
    let none: Vec<String> = Vec::new();
    let out_of = |n: &str| edges.get(n).unwrap_or(&none);
    let mut found = Vec::new();
    let mut roots: Vec<&str> = edges.keys().map(String::as_str).collect();
    roots.sort_unstable();
    for root in roots {
        if st.index.contains_key(root) {
            continue;
        }
        // (node, the next of its edges to follow)
        let mut work: Vec<(&str, usize)> = vec![(root, 0)];
        while let Some((node, next)) = work.pop() {
            if next == 0 {
                let i = st.index.len();
                st.index.insert(node, i);
                st.low.insert(node, i);
                st.stack.push(node);
                st.on_stack.insert(node);
            }
            if let Some(to) = out_of(node).get(next) {
                work.push((node, next + 1));
                let to = to.as_str();
                match st.index.get(to) {
                    None => work.push((to, 0)),
                    Some(&ti) if st.on_stack.contains(to) => {
                        let low = st.low[node].min(ti);
                        st.low.insert(node, low);
                    }
                    Some(_) => {}
                }
                continue;
            }
            // Every edge of `node` followed: close its component, tell its caller.
            if st.low[node] == st.index[node] {
                let mut comp = HashSet::new();
                while let Some(n) = st.stack.pop() {
                    st.on_stack.remove(n);
                    comp.insert(n.to_owned());
                    if n == node {
                        break;
                    }
                }
                if comp.len() > 1 || out_of(node).iter().any(|t| t == node) {
                    found.push(comp);
                }
            }
            if let Some(&(caller, _)) = work.last() {
                let low = st.low[caller].min(st.low[node]);
                st.low.insert(caller, low);
            }
        }
    }
    found
}

/// The shortest cycle through the smallest node of `comp`, within it (breadth-first).
fn shortest_cycle(
    edges: &HashMap<String, Vec<String>>,
    comp: &HashSet<String>,
) -> Option<Vec<String>> {
    let start = comp.iter().min()?;
    let mut came_from: HashMap<&str, &str> = HashMap::new();
    let mut level = vec![start.as_str()];
    while !level.is_empty() {
        let mut next = Vec::new();
        for n in level {
            for to in edges.get(n).into_iter().flatten() {
                if to == start {
                    let mut path = vec![n.to_owned()];
                    let mut cur = n;
                    while cur != start {
                        cur = came_from[cur];
                        path.push(cur.to_owned());
                    }
                    path.reverse();
                    return Some(path);
                }
                if comp.contains(to) && !came_from.contains_key(to.as_str()) {
                    came_from.insert(to, n);
                    next.push(to.as_str());
                }
            }
        }
        level = next;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn graph(edges: &[(&str, &str)]) -> HashMap<String, Vec<String>> {
        let mut g: HashMap<String, Vec<String>> = HashMap::new();
        for (a, b) in edges {
            g.entry((*a).into()).or_default().push((*b).into());
        }
        g
    }

    fn cycles(edges: &[(&str, &str)]) -> Vec<Vec<String>> {
        let g = graph(edges);
        let mut out: Vec<Vec<String>> = components(&g)
            .iter()
            .filter_map(|c| shortest_cycle(&g, c))
            .collect();
        out.sort();
        out
    }

    #[test]
    fn a_tree_of_nested_groups_has_no_cycle() {
        assert!(cycles(&[("a", "b"), ("b", "c"), ("d", "c"), ("e", "a")]).is_empty());
    }

    #[test]
    fn two_three_and_self_cycles_are_found_once_each() {
        let found = cycles(&[
            ("a", "b"),
            ("b", "a"),
            ("x", "y"),
            ("y", "z"),
            ("z", "x"),
            ("z", "w"),
            ("s", "s"),
            ("t", "a"),
        ]);
        let want: Vec<Vec<String>> = vec![
            vec!["a".into(), "b".into()],
            vec!["s".into()],
            vec!["x".into(), "y".into(), "z".into()],
        ];
        assert_eq!(found, want);
    }

    #[test]
    fn a_component_is_spelled_by_its_shortest_cycle_from_its_smallest_group() {
        // a → b → c → a and a → c → a both run through a: the shorter one is named.
        let found = cycles(&[("a", "b"), ("b", "c"), ("c", "a"), ("a", "c")]);
        assert_eq!(found, vec![vec!["a".to_owned(), "c".to_owned()]]);
    }

    #[test]
    fn a_long_chain_does_not_overflow_the_stack() {
        let names: Vec<String> = (0..50_000).map(|i| format!("g{i:06}")).collect();
        let mut g: HashMap<String, Vec<String>> = HashMap::new();
        for w in names.windows(2) {
            g.insert(w[0].clone(), vec![w[1].clone()]);
        }
        g.insert(names[names.len() - 1].clone(), vec![names[0].clone()]);
        let comps = components(&g);
        assert_eq!(comps.len(), 1);
        assert_eq!(comps[0].len(), names.len());
    }
}

#[cfg(test)]
mod store_tests {
    use serde_json::json;

    use super::super::{
        add_member, create_in, update_in, Actor, MemberRef, MembersChange, Store, StoreError,
        StoreOptions, Target, Update, UpdateRequest,
    };
    use crate::clock::Timestamp;
    use crate::scim::schema::ResourceType;

    fn open() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("db.redb"), &StoreOptions::default()).unwrap();
        (dir, store)
    }

    fn group(store: &Store, name: &str, members: &[&str]) -> String {
        let attrs = json!({ "displayName": name }).as_object().unwrap().clone();
        let members = members
            .iter()
            .map(|m| MemberRef {
                id: (*m).to_owned(),
                rt: Some(ResourceType::Group),
                display: None,
            })
            .collect();
        store
            .write_blocking(move |txn| {
                create_in(
                    txn,
                    ResourceType::Group,
                    attrs,
                    members,
                    &Actor::system("test"),
                    Timestamp::now(),
                )
            })
            .unwrap()
            .resource
            .id
    }

    /// Adds `members` to `group` as a PATCH (`Delta`) or a PUT (`Set`) does.
    fn add(store: &Store, group: &str, members: &[&str], set: bool) -> Result<(), StoreError> {
        let refs: Vec<MemberRef> = members
            .iter()
            .map(|m| MemberRef {
                id: (*m).to_owned(),
                rt: None,
                display: None,
            })
            .collect();
        let req = UpdateRequest {
            target: Target {
                rt: ResourceType::Group,
                id: group.to_owned(),
                if_match: None,
            },
            with_members: false,
            actor: Actor::system("test"),
            now: Timestamp::now(),
            audit: None,
        };
        store
            .write_blocking(move |txn| {
                update_in(txn, &req, |c| {
                    Ok(Update {
                        attrs: c.attrs,
                        members: if set {
                            MembersChange::Set(refs)
                        } else {
                            MembersChange::Delta {
                                add: refs,
                                remove: vec![],
                            }
                        },
                    })
                })
            })
            .map(|_| ())
    }

    fn refused_detail(r: Result<(), StoreError>) -> String {
        match r {
            Err(StoreError::Scim(e)) if e.status == 400 => {
                assert_eq!(
                    e.scim_type,
                    Some(crate::scim::error::ScimType::InvalidValue)
                );
                e.detail
            }
            other => panic!("expected 400 invalidValue, got {other:?}"),
        }
    }

    #[test]
    fn closing_a_two_group_cycle_is_refused_naming_it() {
        let (_d, store) = open();
        let a = group(&store, "A", &[]);
        let b = group(&store, "B", &[&a]);
        let detail = refused_detail(add(&store, &a, &[&b], false));
        assert!(
            detail.contains("the group \"B\" cannot be a member of \"A\"")
                && detail.contains("\"A\" → \"B\" → \"A\""),
            "{detail}"
        );
        // Nothing was written: A still has no members, B still holds A.
        let snap = store.snapshot().unwrap();
        assert_eq!(snap.member_count(&a).unwrap(), 0);
        assert!(snap.is_member(&b, &a).unwrap());
        assert!(snap.membership_cycles().unwrap().is_empty());
    }

    #[test]
    fn closing_a_longer_cycle_by_put_is_refused_naming_every_group() {
        let (_d, store) = open();
        let a = group(&store, "A", &[]);
        let b = group(&store, "B", &[&a]);
        let c = group(&store, "C", &[&b]);
        let other = group(&store, "Other", &[]);
        // A PUT of A's members with C among them: A → B → C → A.
        let detail = refused_detail(add(&store, &a, &[&other, &c], true));
        assert!(detail.contains("\"A\" → \"B\" → \"C\" → \"A\""), "{detail}");
        // Nesting that closes no cycle is accepted: A into Other, Other into C.
        add(&store, &other, &[&a], false).unwrap();
        add(&store, &c, &[&other], false).unwrap();
        assert!(store
            .snapshot()
            .unwrap()
            .membership_cycles()
            .unwrap()
            .is_empty());
    }

    /// What an import of an older release's data holds (a cycle written directly)
    /// is listed, once per cycle, smallest id first.
    #[test]
    fn cycles_written_before_are_listed() {
        let (_d, store) = open();
        let a = group(&store, "A", &[]);
        let b = group(&store, "B", &[&a]);
        let c = group(&store, "C", &[]);
        let (a2, b2, c2) = (a.clone(), b.clone(), c.clone());
        store
            .write_blocking(move |txn| {
                add_member(txn, &a2, &b2, ResourceType::Group, None)?;
                add_member(txn, &c2, &c2, ResourceType::Group, None)
            })
            .unwrap();
        let cycles = store.snapshot().unwrap().membership_cycles().unwrap();
        assert_eq!(cycles, vec![vec![a, b], vec![c]]);
    }
}
