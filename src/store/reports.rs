//! Manager links between users: the rule that a user's enterprise `manager` names a
//! User of this directory ([`check_manager`]) and the manager → reports index
//! (`reports`, format 6) that keeps the links true when a manager is deleted.
//!
//! RFC 7643 §4.3 defines `manager.value` as "the id of the SCIM resource representing
//! the User's manager": a reference, like a group's member. A deleted group member
//! leaves its groups; a deleted manager now leaves its reports too ([`on_delete`]):
//! each user that named it loses its `manager` in the same transaction, and its
//! version and `lastModified` move (its own data changed). Entra ID and Okta expect
//! exactly that: neither sends a "remove manager" to the reports when it deletes a
//! user, and a link to a deleted user is one the migration push cannot replay.
//! Without the index that needs a scan of every user on every delete.
//!
//! The index holds one row (manager id, user id) for every user whose `manager`
//! names an id, whether that user exists or not (an import may restore a link to a
//! user the export did not hold; the readiness check names those). `store/mod.rs`
//! calls [`follow`] after each user write (create, replace, PATCH, import) and
//! [`on_delete`] when a user is deleted; the upgrade to format 6 calls [`build`].
//! Knows the users table and the change events; nothing of HTTP or of how a client
//! sent the manager.

use redb::{ReadableTable, TableDefinition, WriteTransaction};
use serde::Deserialize;
use serde_json::Value;

use super::{
    append_event, exists_in, get_in, put_in, Actor, ActorKind, AuditOutcome, AuditRecord, EventOp,
    StoreResult, USERS,
};
use crate::clock::Timestamp;
use crate::scim::error::ScimError;
use crate::scim::resource::Attributes;
use crate::scim::schema::{ResourceType, ENTERPRISE_USER_URN};

/// (manager id, user id) → (): the users whose enterprise `manager.value` is that id
/// (format 6). A range scan gives a manager's reports.
pub(super) const REPORTS: TableDefinition<(&str, &str), ()> = TableDefinition::new("reports");

/// The id a user's enterprise `manager.value` names (RFC 7643 §4.3: "the id of the
/// SCIM resource representing the User's manager"); a bare id as older records may
/// hold it.
pub(super) fn manager_of(attrs: &Attributes) -> Option<&str> {
    manager_id(attrs.get(ENTERPRISE_USER_URN)?.get("manager")?)
}

/// The id in a stored `manager` value: `{"value": id}` or a bare id.
fn manager_id(m: &Value) -> Option<&str> {
    m.get("value")
        .and_then(Value::as_str)
        .or_else(|| m.as_str())
}

/// Refuses (400 `invalidValue`, naming the value) a manager that is no User of this
/// directory, as a group member that is none is refused. Entra ID sends the manager's
/// id in this directory (it resolves the reference before it sends it); Okta sends
/// what the admin mapped, which must be that id as well. A link the record already
/// holds (restored by an import) is left as it is.
pub(super) fn check_manager(
    txn: &WriteTransaction,
    id: Option<&str>,
    attrs: &Attributes,
    old: Option<&Attributes>,
) -> StoreResult<()> {
    let Some(manager) = manager_of(attrs) else {
        return Ok(());
    };
    if old.and_then(manager_of) == Some(manager)
        || id == Some(manager)
        || exists_in(txn, ResourceType::User, manager)?
    {
        return Ok(());
    }
    Err(ScimError::invalid_value(format!(
        "the manager \"{manager}\" is not a User of this directory \
         (manager.value is the id of the manager's User resource, RFC 7643 §4.3)"
    ))
    .into())
}

/// Keeps the index in step with a write of user `id`: `old` are its attributes before
/// (`None` for a new user), `new` after. Two row operations at most; nothing when the
/// manager did not change.
pub(super) fn follow(
    txn: &WriteTransaction,
    id: &str,
    old: Option<&Attributes>,
    new: Option<&Attributes>,
) -> StoreResult<()> {
    let (before, after) = (old.and_then(manager_of), new.and_then(manager_of));
    if before == after {
        return Ok(());
    }
    let mut t = txn.open_table(REPORTS)?;
    if let Some(m) = before {
        t.remove((m, id))?;
    }
    if let Some(m) = after {
        t.insert((m, id), ())?;
    }
    Ok(())
}

/// A user whose `manager` was removed because its manager was deleted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ClearedReport {
    pub id: String,
    /// Its `userName` (audit entries name it).
    pub user_name: Option<String>,
}

/// After user `id` (whose attributes were `attrs`) was removed: its own row goes, and
/// every user that reported to it loses its `manager`, gets a new version and
/// `lastModified` `now`, and an `update` change event (the migration mirror replays
/// the user without its manager). Returns the reports changed, in id order (the
/// delete's audit names them: trial 7 item 16, they changed silently). The cost is
/// the number of reports, not the size of the directory.
pub(super) fn on_delete(
    txn: &WriteTransaction,
    id: &str,
    attrs: &Attributes,
    actor: &Actor,
    now: Timestamp,
) -> StoreResult<Vec<ClearedReport>> {
    follow(txn, id, Some(attrs), None)?;
    let reports = reports_of(&txn.open_table(REPORTS)?, id)?;
    let mut changed = Vec::new();
    for report in &reports {
        txn.open_table(REPORTS)?.remove((id, report.as_str()))?;
        let Some(mut user) = get_in(txn, ResourceType::User, report)? else {
            continue;
        };
        if manager_of(&user.attrs) != Some(id) {
            continue;
        }
        remove_manager(&mut user.attrs);
        user.meta.version += 1;
        user.meta.last_modified = now.to_rfc3339();
        put_in(txn, ResourceType::User, &user)?;
        append_event(txn, actor, now, EventOp::Update, ResourceType::User, report)?;
        changed.push(ClearedReport {
            id: report.clone(),
            user_name: user
                .attrs
                .get("userName")
                .and_then(Value::as_str)
                .map(str::to_owned),
        });
    }
    Ok(changed)
}

/// The audit action of a report's manager removed by its manager's delete.
pub(crate) const MANAGER_REMOVED: &str = "scim.manager_removed";
/// Reports named in the note of the delete's own entry; the others are counted.
const NOTE_NAMES: usize = 10;

/// The note on a manager's delete entry: "its 2 reports lost their manager: a, b".
pub(super) fn delete_note(cleared: &[ClearedReport]) -> String {
    let mut names: Vec<&str> = cleared
        .iter()
        .take(NOTE_NAMES)
        .map(|c| c.user_name.as_deref().unwrap_or(&c.id))
        .collect();
    let more = cleared.len().saturating_sub(NOTE_NAMES);
    let more = if more > 0 {
        format!(" and {more} more")
    } else {
        String::new()
    };
    names.sort_unstable();
    format!(
        "{} lost {} manager: {}{more}",
        match cleared.len() {
            1 => "its report".to_owned(),
            n => format!("its {n} reports"),
        },
        if cleared.len() == 1 { "its" } else { "their" },
        names.join(", ")
    )
}

/// One audit entry per report whose manager the delete of user `manager` (named
/// `manager_name`) removed, by the delete's actor: as `delete` (the delete's own
/// entry, when it has one) says, else as the store's `actor` (a Bulk request, audited
/// as a whole).
pub(super) fn removed_entries(
    delete: Option<&AuditRecord>,
    actor: &Actor,
    now: Timestamp,
    (manager, manager_name): (&str, Option<&str>),
    cleared: &[ClearedReport],
) -> Vec<AuditRecord> {
    let manager = match manager_name {
        Some(name) => format!("\"{name}\" (id {manager})"),
        None => format!("with the id {manager}"),
    };
    let reason = format!(
        "its manager {manager} was deleted, so manager was removed (RFC 7643 §4.3: \
         manager.value names a User of this directory)"
    );
    cleared
        .iter()
        .map(|c| AuditRecord {
            seq: 0,
            time: now,
            actor_kind: delete.map_or(
                if actor.token_id.is_some() {
                    ActorKind::Token
                } else {
                    ActorKind::System
                },
                |d| d.actor_kind,
            ),
            actor: delete.map_or_else(|| actor.name.clone(), |d| d.actor.clone()),
            client: delete.and_then(|d| d.client),
            action: MANAGER_REMOVED.to_owned(),
            resource_type: Some(ResourceType::User.name().to_owned()),
            resource_id: Some(c.id.clone()),
            resource_name: c.user_name.clone(),
            outcome: AuditOutcome::Done,
            status: None,
            reason: Some(reason.clone()),
        })
        .collect()
}

impl super::Snapshot {
    /// The direct reports of user `manager` (the users whose enterprise
    /// `manager.value` is its id): at most `limit` ids in id order, and how many there
    /// are. One range scan of the index's keys; the count reads keys only.
    pub(crate) fn reports_page(
        &self,
        manager: &str,
        limit: usize,
    ) -> StoreResult<(Vec<String>, u64)> {
        let t = self.txn().open_table(REPORTS)?;
        let mut ids = Vec::with_capacity(limit.min(1024));
        let mut total = 0u64;
        for row in t.range((manager, "")..)? {
            let (k, _) = row?;
            let (m, r) = k.value();
            if m != manager {
                break;
            }
            if ids.len() < limit {
                ids.push(r.to_owned());
            }
            total += 1;
        }
        Ok((ids, total))
    }
}

/// The ids of the users whose manager is `manager`, in id order.
fn reports_of(
    t: &impl ReadableTable<(&'static str, &'static str), ()>,
    manager: &str,
) -> StoreResult<Vec<String>> {
    let mut out = Vec::new();
    for row in t.range((manager, "")..)? {
        let (k, _) = row?;
        let (m, r) = k.value();
        if m != manager {
            break;
        }
        out.push(r.to_owned());
    }
    Ok(out)
}

/// Removes the enterprise `manager`, and the extension object when nothing else is
/// left in it (unassigned and empty are one state, RFC 7643 §2.5, as a PATCH
/// "remove" leaves it).
fn remove_manager(attrs: &mut Attributes) {
    let Some(Value::Object(ext)) = attrs.get_mut(ENTERPRISE_USER_URN) else {
        return;
    };
    ext.remove("manager");
    if ext.is_empty() {
        attrs.remove(ENTERPRISE_USER_URN);
    }
}

/// The upgrade to format 6: fills the index from every user's record. A link to a
/// user that no longer exists (format 5 left a deleted manager's reports pointing at
/// it) is cleared as a delete now clears it: the user gets a new version and
/// `lastModified` `now`, and one note names it (the first `MAX_NOTES`, then a count).
/// Reads only each record's manager (no attribute tree); memory holds the dangling
/// links alone.
pub(super) fn build(
    txn: &WriteTransaction,
    now: Timestamp,
    notes: &mut Vec<String>,
) -> StoreResult<()> {
    const MAX_NOTES: usize = 100;
    let mut dangling: Vec<(String, String)> = Vec::new();
    {
        let users = txn.open_table(USERS)?;
        let mut index = txn.open_table(REPORTS)?;
        for row in users.iter()? {
            let (k, v) = row?;
            let Some(manager) = stored_manager(v.value())? else {
                continue;
            };
            let id = k.value();
            if manager == id || users.get(manager.as_str())?.is_some() {
                index.insert((manager.as_str(), id), ())?;
            } else {
                dangling.push((id.to_owned(), manager));
            }
        }
    }
    for (i, (id, manager)) in dangling.iter().enumerate() {
        let Some(mut user) = get_in(txn, ResourceType::User, id)? else {
            continue;
        };
        remove_manager(&mut user.attrs);
        user.meta.version += 1;
        user.meta.last_modified = now.to_rfc3339();
        put_in(txn, ResourceType::User, &user)?;
        if i < MAX_NOTES {
            notes.push(format!(
                "User {id}: its manager {manager} was deleted before this release cleared \
                 a deleted manager from its reports; the link is removed (set a new \
                 manager in your identity provider if it has one)"
            ));
        }
    }
    if dangling.len() > MAX_NOTES {
        notes.push(format!(
            "… and {} more users whose deleted manager was removed",
            dangling.len() - MAX_NOTES
        ));
    }
    Ok(())
}

/// The manager id a stored user record names, parsed without building the record's
/// other attributes (the upgrade reads every user once).
fn stored_manager(record: &[u8]) -> StoreResult<Option<String>> {
    #[derive(Deserialize)]
    struct Record {
        attrs: Attrs,
    }
    #[derive(Deserialize)]
    struct Attrs {
        // ENTERPRISE_USER_URN (a serde attribute takes a literal; a test compares).
        #[serde(rename = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User")]
        enterprise: Option<Enterprise>,
    }
    #[derive(Deserialize)]
    struct Enterprise {
        manager: Option<Value>,
    }
    let r: Record = serde_json::from_slice(record)?;
    Ok(r.attrs
        .enterprise
        .and_then(|e| e.manager)
        .as_ref()
        .and_then(manager_id)
        .map(str::to_owned))
}

/// A set of (manager id, user id) rows.
#[cfg(test)]
pub(super) type Links = std::collections::BTreeSet<(String, String)>;

/// Every row of the index, and every row the users' records say it should hold (for
/// the tests: the two must be equal).
#[cfg(test)]
pub(super) fn index_and_recomputed(txn: &redb::ReadTransaction) -> StoreResult<(Links, Links)> {
    let mut index = Links::new();
    for row in txn.open_table(REPORTS)?.iter()? {
        let (k, _) = row?;
        let (m, r) = k.value();
        index.insert((m.to_owned(), r.to_owned()));
    }
    let mut recomputed = Links::new();
    for row in txn.open_table(USERS)?.iter()? {
        let (k, v) = row?;
        if let Some(m) = stored_manager(v.value())? {
            recomputed.insert((m, k.value().to_owned()));
        }
    }
    Ok((index, recomputed))
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use serde_json::json;

    use super::super::{
        create_in, delete_in, import_batch, new_id, update_in, ImportItem, MembersChange, Meta,
        Store, StoreError, StoreOptions, StoredResource, Target, Update, UpdateRequest,
    };
    use super::*;

    fn open() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("db.redb"), &StoreOptions::default()).unwrap();
        (dir, store)
    }

    fn at(s: u32) -> Timestamp {
        Timestamp::from_unix_ms(1_800_000_000_000 + i64::from(s) * 1000).unwrap()
    }

    fn actor() -> Actor {
        Actor::system("test")
    }

    fn attrs(v: Value) -> Attributes {
        v.as_object().unwrap().clone()
    }

    fn create(txn: &WriteTransaction, name: &str, ent: Option<Value>) -> StoreResult<String> {
        let mut a = attrs(json!({ "userName": name }));
        if let Some(e) = ent {
            a.insert(ENTERPRISE_USER_URN.into(), e);
        }
        Ok(
            create_in(txn, ResourceType::User, a, vec![], &actor(), at(0))?
                .resource
                .id,
        )
    }

    /// The user's attributes replaced by `f(current)`, as PUT and PATCH do.
    fn update(
        txn: &WriteTransaction,
        id: &str,
        now: Timestamp,
        f: impl FnOnce(&mut Attributes),
    ) -> StoreResult<StoredResource> {
        let req = UpdateRequest {
            target: target(id),
            with_members: false,
            actor: actor(),
            now,
            audit: None,
        };
        update_in(txn, &req, |mut current| {
            f(&mut current.attrs);
            Ok(Update {
                attrs: current.attrs,
                members: MembersChange::Keep,
            })
        })
    }

    fn target(id: &str) -> Target {
        Target {
            rt: ResourceType::User,
            id: id.to_owned(),
            if_match: None,
        }
    }

    fn links(store: &Store) -> Links {
        let snap = store.snapshot().unwrap();
        let (index, recomputed) = index_and_recomputed(snap.txn()).unwrap();
        assert_eq!(
            index, recomputed,
            "the index is what the users' records say"
        );
        index
    }

    #[test]
    fn the_enterprise_urn_in_the_record_reader_is_the_schemas() {
        let record = json!({"id": "u", "meta": {}, "attrs": {ENTERPRISE_USER_URN: {"manager": {"value": "m"}}}});
        let bytes = serde_json::to_vec(&record).unwrap();
        assert_eq!(stored_manager(&bytes).unwrap().as_deref(), Some("m"));
        let bare = json!({"attrs": {ENTERPRISE_USER_URN: {"manager": "m2", "department": "D"}}});
        let bytes = serde_json::to_vec(&bare).unwrap();
        assert_eq!(stored_manager(&bytes).unwrap().as_deref(), Some("m2"));
    }

    /// Deleting a manager clears `manager` from each of its reports in the delete's
    /// commit: their version and lastModified move and each gets an update event
    /// before the delete's own; other users and other attributes stay as they were.
    #[test]
    fn deleting_a_manager_clears_it_from_every_report() {
        let (_d, store) = open();
        let (boss, r1, r2, other, own) = store
            .write_blocking(|txn| {
                let boss = create(txn, "boss", None)?;
                let r1 = create(txn, "r1", Some(json!({"manager": {"value": boss}})))?;
                // A bare id, as older records may hold it, beside another attribute.
                let r2 = create(txn, "r2", Some(json!({"manager": boss, "department": "D"})))?;
                let other = create(txn, "other", Some(json!({"manager": {"value": r1}})))?;
                let own = create(txn, "own", None)?;
                // Its own manager: allowed, and deleting it leaves nothing behind.
                update(txn, &own, at(0), |a| {
                    a.insert(
                        ENTERPRISE_USER_URN.into(),
                        json!({"manager": {"value": own}}),
                    );
                })?;
                Ok((boss, r1, r2, other, own))
            })
            .unwrap();
        assert_eq!(links(&store).len(), 4);
        let before = store.snapshot().unwrap().last_event_seq().unwrap();
        store
            .write_blocking({
                let (boss, own) = (boss.clone(), own.clone());
                move |txn| {
                    delete_in(txn, &target(&boss), &actor(), at(5))?;
                    delete_in(txn, &target(&own), &actor(), at(5))
                }
            })
            .unwrap();
        assert_eq!(
            links(&store),
            [(r1.clone(), other.clone())].into_iter().collect()
        );
        let snap = store.snapshot().unwrap();
        let get = |id: &str| snap.get(ResourceType::User, id).unwrap().unwrap();
        let (u1, u2, o) = (get(&r1), get(&r2), get(&other));
        assert_eq!(u1.attrs.get(ENTERPRISE_USER_URN), None);
        assert_eq!(u2.attrs[ENTERPRISE_USER_URN], json!({"department": "D"}));
        for u in [&u1, &u2] {
            assert_eq!(
                (u.meta.version, u.meta.last_modified.as_str()),
                (2, at(5).to_rfc3339().as_str())
            );
        }
        assert_eq!(o.meta.version, 1);
        assert_eq!(
            o.attrs[ENTERPRISE_USER_URN]["manager"]["value"],
            r1.as_str()
        );
        let events: Vec<(EventOp, String)> = snap
            .events_after(before, 10)
            .unwrap()
            .into_iter()
            .map(|e| (e.op, e.id))
            .collect();
        assert_eq!(
            events,
            [
                (EventOp::Update, r1.clone()),
                (EventOp::Update, r2.clone()),
                (EventOp::Delete, boss.clone()),
                (EventOp::Delete, own.clone()),
            ]
        );
        drop(snap);
        store.close();
    }

    #[test]
    fn the_delete_note_names_the_reports_then_counts_them() {
        let cleared = |n: usize| -> Vec<ClearedReport> {
            (0..n)
                .map(|i| ClearedReport {
                    id: format!("id{i:02}"),
                    user_name: (i != 1).then(|| format!("u{i:02}@example.com")),
                })
                .collect()
        };
        assert_eq!(
            delete_note(&cleared(1)),
            "its report lost its manager: u00@example.com"
        );
        assert_eq!(
            delete_note(&cleared(2)),
            "its 2 reports lost their manager: id01, u00@example.com"
        );
        let many = delete_note(&cleared(13));
        assert!(
            many.starts_with("its 13 reports lost their manager: id01, u00@example.com")
                && many.ends_with("u09@example.com and 3 more"),
            "{many}"
        );
    }

    /// A refused delete (If-Match) changes no report.
    #[test]
    fn a_refused_delete_changes_no_report() {
        let (_d, store) = open();
        let (boss, r) = store
            .write_blocking(|txn| {
                let boss = create(txn, "boss", None)?;
                let r = create(txn, "r", Some(json!({"manager": {"value": boss}})))?;
                Ok((boss, r))
            })
            .unwrap();
        let err = store
            .write_blocking(move |txn| {
                let mut t = target(&boss);
                t.if_match = Some("W/\"9\"".into());
                delete_in(txn, &t, &actor(), at(1))
            })
            .unwrap_err();
        assert!(
            matches!(err, StoreError::Scim(ref e) if e.status == 412),
            "{err}"
        );
        let snap = store.snapshot().unwrap();
        let u = snap.get(ResourceType::User, &r).unwrap().unwrap();
        assert_eq!(u.meta.version, 1);
        assert!(u.attrs.contains_key(ENTERPRISE_USER_URN));
        drop(snap);
        assert_eq!(links(&store).len(), 1);
        store.close();
    }

    /// One step of the random sequence below; `a` and `b` pick users (modulo how
    /// many there are), `kind` how the manager is written.
    #[derive(Debug, Clone)]
    enum Op {
        Create {
            manager: Option<u8>,
            bare: bool,
        },
        SetManager {
            user: u8,
            manager: u8,
            bare: bool,
        },
        RemoveManager {
            user: u8,
        },
        /// An update that does not touch the manager.
        Rename {
            user: u8,
        },
        Delete {
            user: u8,
        },
        /// An imported user whose manager is not in the directory (an older export).
        ImportDangling,
        /// An imported user whose manager is.
        Import {
            manager: u8,
        },
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            3 => (proptest::option::of(any::<u8>()), any::<bool>())
                .prop_map(|(manager, bare)| Op::Create { manager, bare }),
            3 => (any::<u8>(), any::<u8>(), any::<bool>())
                .prop_map(|(user, manager, bare)| Op::SetManager { user, manager, bare }),
            1 => any::<u8>().prop_map(|user| Op::RemoveManager { user }),
            1 => any::<u8>().prop_map(|user| Op::Rename { user }),
            2 => any::<u8>().prop_map(|user| Op::Delete { user }),
            1 => Just(Op::ImportDangling),
            1 => any::<u8>().prop_map(|manager| Op::Import { manager }),
        ]
    }

    fn manager_value(id: &str, bare: bool) -> Value {
        if bare {
            json!(id)
        } else {
            json!({ "value": id })
        }
    }

    /// Runs `ops` in one transaction (each op checks before it writes, as in a
    /// group commit); returns the managers imported dangling.
    fn run(txn: &WriteTransaction, ops: &[Op]) -> StoreResult<Vec<String>> {
        let mut users: Vec<String> = Vec::new();
        let mut dangling = Vec::new();
        let pick = |users: &[String], i: u8| users[usize::from(i) % users.len()].clone();
        for (n, op) in ops.iter().enumerate() {
            let now = at(n as u32);
            match op.clone() {
                Op::Create { manager, bare } => {
                    let ent = manager
                        .filter(|_| !users.is_empty())
                        .map(|m| json!({ "manager": manager_value(&pick(&users, m), bare) }));
                    users.push(create(txn, &format!("u{n}"), ent)?);
                }
                _ if users.is_empty() => {}
                Op::SetManager {
                    user,
                    manager,
                    bare,
                } => {
                    let (u, m) = (pick(&users, user), pick(&users, manager));
                    update(txn, &u, now, |a| {
                        let ext = a.entry(ENTERPRISE_USER_URN).or_insert_with(|| json!({}));
                        ext["manager"] = manager_value(&m, bare);
                    })?;
                }
                Op::RemoveManager { user } => {
                    update(txn, &pick(&users, user), now, remove_manager)?;
                }
                Op::Rename { user } => {
                    update(txn, &pick(&users, user), now, |a| {
                        a.insert("displayName".into(), json!(format!("renamed {n}")));
                    })?;
                }
                Op::Delete { user } => {
                    let u = pick(&users, user);
                    delete_in(txn, &target(&u), &actor(), now)?;
                    users.retain(|x| *x != u);
                }
                Op::ImportDangling | Op::Import { .. } => {
                    let manager = match op {
                        Op::Import { manager } => pick(&users, *manager),
                        _ => {
                            let gone = new_id(now);
                            dangling.push(gone.clone());
                            gone
                        }
                    };
                    let r = StoredResource {
                        id: new_id(now),
                        meta: Meta {
                            created: now.to_rfc3339(),
                            last_modified: now.to_rfc3339(),
                            version: 1,
                            groups_tag: None,
                        },
                        attrs: attrs(json!({"userName": format!("i{n}"),
                            ENTERPRISE_USER_URN: {"manager": {"value": manager}}})),
                    };
                    users.push(r.id.clone());
                    let item = ImportItem::Resource(ResourceType::User, r);
                    import_batch(txn, vec![item], now, &mut Vec::new())?;
                }
            }
        }
        Ok(dangling)
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

        /// After any sequence of creates, replaces, manager changes, deletes and
        /// imports, the index is exactly what the users' records say, and every
        /// manager named is a user of the directory unless an import brought it
        /// dangling.
        #[test]
        fn the_index_is_what_the_users_say(ops in proptest::collection::vec(op(), 1..40)) {
            let (_d, store) = open();
            let dangling = store.write_blocking(move |txn| run(txn, &ops)).unwrap();
            let links = links(&store);
            let snap = store.snapshot().unwrap();
            for (manager, report) in &links {
                prop_assert!(
                    snap.get(ResourceType::User, manager).unwrap().is_some()
                        || dangling.contains(manager),
                    "{report}'s manager {manager} was deleted but is still named"
                );
            }
            drop(snap);
            store.close();
        }
    }
}
