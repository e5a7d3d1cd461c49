//! Stored-format upgrades. The database records its format version in `settings`
//! (`format_version`); `Store::open` refuses a newer version and upgrades an older one
//! in place: it copies the file to `<name>.format<N>-backup` first, then runs every
//! step from the file's version to [`FORMAT_VERSION`] in ONE write transaction, so a
//! crash or an error leaves the old file exactly as it was (and the copy beside it).
//!
//! Adding a format version is one function and one test:
//! 1. bump [`FORMAT_VERSION`] and append a [`Step`] whose `from` is the old version;
//! 2. commit a database written by the previous release next to the others in
//!    `tests/fixtures/` (see `tests/fixtures/format1/make.sh`) and a unit test below
//!    that opens a copy of it and checks what the step changed.
//!
//! Owns nothing but the steps; the tables and index rules are `store/mod.rs`'s.

use std::path::{Path, PathBuf};

use redb::{Database, ReadableDatabase, ReadableTable, WriteTransaction};

use super::{
    get_in, id_table, index_keeping_first, member_fields, member_value, own_name_in, put_in,
    repair_primaries, table, StoreError, StoreResult, EMAILS, FORMAT_KEY, GROUP_NAMES, MEMBERS,
    SETTINGS, USER_NAMES,
};
use crate::clock::Timestamp;
use crate::scim::schema::ResourceType;

/// The on-disk format this binary reads and writes.
pub(crate) const FORMAT_VERSION: u32 = 6;

/// One upgrade: from format `from` to `from + 1`, inside the caller's transaction.
struct Step {
    from: u32,
    /// What changes, for the log.
    what: &'static str,
    run: fn(&WriteTransaction, &mut Upgrade) -> StoreResult<()>,
}

const STEPS: &[Step] = &[
    Step {
        from: 1,
        what: "userName, group name and email index keys become caseless (Unicode NFC + \
               case folding); values with more than one primary: true keep only the first",
        run: v1_to_v2,
    },
    Step {
        from: 2,
        what: "membership rows keep the member's name, so a group's members render \
               without reading each member",
        run: v2_to_v3,
    },
    Step {
        from: 3,
        what: "the admin password becomes the account \"admin\" (named admin accounts); \
               tokens may be rotated (a superseded secret stays valid until revoked)",
        run: v3_to_v4,
    },
    Step {
        from: 4,
        what: "the ids of users and groups get tables of their own, so offset paging \
               steps over ids instead of whole records",
        run: v4_to_v5,
    },
    Step {
        from: 5,
        what: "a manager -> reports index, so deleting a user clears it as its reports' \
               manager; links to managers deleted before are cleared",
        run: v5_to_v6,
    },
];

/// What an upgrade did, for the log and the tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Upgrade {
    pub from: u32,
    pub to: u32,
    /// The copy of the file as it was before the upgrade.
    pub backup: PathBuf,
    /// The time the upgrade ran, the `lastModified` of what it changed.
    pub now: Timestamp,
    /// One line per repaired record or conflict, naming it and saying what to do.
    pub notes: Vec<String>,
}

/// The format version recorded in the file, `None` for a new (empty) database.
pub(super) fn recorded_version(db: &Database) -> StoreResult<Option<u32>> {
    let txn = db.begin_read()?;
    let settings = match txn.open_table(SETTINGS) {
        Ok(t) => t,
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let v = settings.get(FORMAT_KEY)?.map(|v| {
        <[u8; 4]>::try_from(v.value())
            .map(u32::from_le_bytes)
            .unwrap_or(0)
    });
    Ok(v)
}

/// Where the pre-upgrade copy of `path` goes.
pub(crate) fn backup_path(path: &Path, from: u32) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".format{from}-backup"));
    path.with_file_name(name)
}

/// Refuses versions this binary cannot read, and says which steps an older file needs.
pub(super) fn check_version(path: &Path, found: u32) -> StoreResult<bool> {
    if found == FORMAT_VERSION {
        return Ok(false);
    }
    if found > FORMAT_VERSION {
        return Err(StoreError::Format(format!(
            "{} has format version {found}, this scimbridge reads versions up to \
             {FORMAT_VERSION}; use the scimbridge release that wrote it (or a newer one), \
             or export with it and import here",
            path.display()
        )));
    }
    if !STEPS.iter().any(|s| s.from == found) {
        return Err(StoreError::Format(format!(
            "{} has format version {found}, which this scimbridge cannot upgrade; \
             open it with an older release first, or export with it and import here",
            path.display()
        )));
    }
    Ok(true)
}

/// Copies the (closed) database file to its backup path and syncs the copy.
pub(super) fn make_backup(path: &Path, from: u32) -> StoreResult<PathBuf> {
    let backup = backup_path(path, from);
    let fail = |e: std::io::Error| {
        StoreError::Storage(format!(
            "cannot copy {} to {} before upgrading it: {e}; free some space or fix the \
             permissions, then start again (nothing was changed)",
            path.display(),
            backup.display()
        ))
    };
    std::fs::copy(path, &backup).map_err(fail)?;
    std::fs::File::open(&backup)
        .and_then(|f| f.sync_all())
        .map_err(fail)?;
    Ok(backup)
}

/// Runs every step from `from` up to [`FORMAT_VERSION`] in one transaction and records
/// the new version in the same commit.
pub(super) fn run(
    db: &Database,
    from: u32,
    backup: PathBuf,
    now: Timestamp,
) -> StoreResult<Upgrade> {
    run_steps(db, STEPS, from, backup, now)
}

fn run_steps(
    db: &Database,
    steps: &[Step],
    from: u32,
    backup: PathBuf,
    now: Timestamp,
) -> StoreResult<Upgrade> {
    let mut report = Upgrade {
        from,
        to: FORMAT_VERSION,
        backup,
        now,
        notes: Vec::new(),
    };
    let txn = db.begin_write()?;
    for step in steps.iter().filter(|s| s.from >= from) {
        tracing::info!(
            from = step.from,
            to = step.from + 1,
            "upgrading the database: {}",
            step.what
        );
        (step.run)(&txn, &mut report)?;
    }
    txn.open_table(SETTINGS)?
        .insert(FORMAT_KEY, FORMAT_VERSION.to_le_bytes().as_slice())?;
    txn.commit()?;
    Ok(report)
}

// ---- the steps --------------------------------------------------------------------

/// Format 2 keys userName, Group displayName and email indexes by their caseless form
/// (NFC + full case folding) instead of `to_lowercase`, and allows at most one
/// `primary: true` per multi-valued attribute (RFC 7643 §2.4), which format 1 stored
/// as sent. Two userNames that format 1 kept apart but that are one name now keep
/// the older user in the index; the note names both so the admin can rename one
/// (`index_keeping_first`).
fn v1_to_v2(txn: &WriteTransaction, report: &mut Upgrade) -> StoreResult<()> {
    txn.delete_table(USER_NAMES)?;
    txn.delete_multimap_table(GROUP_NAMES)?;
    txn.delete_multimap_table(EMAILS)?;
    txn.open_table(USER_NAMES)?;
    txn.open_multimap_table(GROUP_NAMES)?;
    txn.open_multimap_table(EMAILS)?;
    for rt in ResourceType::ALL {
        let mut after: Option<String> = None;
        loop {
            let ids = ids_after(txn, rt, after.as_deref(), 1000)?;
            let Some(last) = ids.last() else { break };
            after = Some(last.clone());
            for id in ids {
                upgrade_v1_record(txn, report, rt, id)?;
            }
        }
    }
    Ok(())
}

/// One resource of a format-1 file: demote extra primaries, write its caseless keys.
fn upgrade_v1_record(
    txn: &WriteTransaction,
    report: &mut Upgrade,
    rt: ResourceType,
    id: String,
) -> StoreResult<()> {
    let Some(mut r) = get_in(txn, rt, &id)? else {
        return Ok(());
    };
    if repair_primaries(rt, &mut r, report.now, &mut report.notes) {
        put_in(txn, rt, &r)?;
    }
    index_keeping_first(txn, rt, &r, &mut report.notes)
}

/// Format 3 keeps, in each membership row without a client-given `display`, the
/// member's own name (flagged `OWN_NAME`), which format 2 looked up in the member's
/// record at every read. Rows with a given `display` are format 3 already. Walks the
/// table in pages of 1,000 rows so memory does not grow with the directory.
fn v2_to_v3(txn: &WriteTransaction, _report: &mut Upgrade) -> StoreResult<()> {
    let mut after: Option<(String, String)> = None;
    loop {
        let mut page = Vec::with_capacity(1000);
        let mut last = None;
        {
            let t = txn.open_table(MEMBERS)?;
            let range = match &after {
                Some((g, m)) => t.range::<(&str, &str)>((
                    std::ops::Bound::Excluded((g.as_str(), m.as_str())),
                    std::ops::Bound::Unbounded,
                ))?,
                None => t.range::<(&str, &str)>(..)?,
            };
            for row in range.take(1000) {
                let (k, v) = row?;
                let (g, m) = k.value();
                let (rt, own, name) = member_fields(v.value());
                // Format 2 wrote the type code alone when no display was given.
                if !own && name.is_none() {
                    page.push((g.to_owned(), m.to_owned(), rt));
                }
                last = Some((g.to_owned(), m.to_owned()));
            }
        }
        let Some(last) = last else { break };
        let mut t = txn.open_table(MEMBERS)?;
        for (g, m, rt) in page {
            let name = own_name_in(txn, rt, &m)?;
            t.insert(
                (g.as_str(), m.as_str()),
                member_value(rt, None, name.as_deref()).as_slice(),
            )?;
        }
        after = Some(last);
    }
    Ok(())
}

/// Format 4 keeps named admin accounts in their own table (`store/admin.rs`): the
/// single password of format 3 becomes the account "admin", so the old password
/// signs in as "admin". Token records gain `superseded` (rotation); it defaults to
/// none, so format 3's records read unchanged and need no rewrite.
fn v3_to_v4(txn: &WriteTransaction, report: &mut Upgrade) -> StoreResult<()> {
    super::admin::upgrade_single_password(txn, report.now)
}

/// Format 5 keeps each type's ids in a table of their own (`user_ids`, `group_ids`),
/// which offset paging walks instead of the resource rows. Filled from the resource
/// tables' keys in pages of 1,000 (memory does not grow with the directory); keys
/// arrive in order, so the inserts append.
fn v4_to_v5(txn: &WriteTransaction, _report: &mut Upgrade) -> StoreResult<()> {
    for rt in ResourceType::ALL {
        let mut ids_table = txn.open_table(id_table(rt))?;
        let mut after: Option<String> = None;
        loop {
            let ids = ids_after(txn, rt, after.as_deref(), 1000)?;
            let Some(last) = ids.last() else { break };
            for id in &ids {
                ids_table.insert(id.as_str(), ())?;
            }
            after = Some(last.clone());
        }
    }
    Ok(())
}

/// Format 6 keeps a manager -> reports index (`store/reports.rs`): deleting a user
/// clears the `manager` of every user that reported to it. Filled from every user's
/// record; the links format 5 left to deleted managers are cleared and noted.
fn v5_to_v6(txn: &WriteTransaction, report: &mut Upgrade) -> StoreResult<()> {
    super::reports::build(txn, report.now, &mut report.notes)
}

/// Up to `limit` ids after `after`, in order: the upgrade walks a table in pages so
/// its memory does not grow with the directory.
fn ids_after(
    txn: &WriteTransaction,
    rt: ResourceType,
    after: Option<&str>,
    limit: usize,
) -> StoreResult<Vec<String>> {
    let t = txn.open_table(table(rt))?;
    let range = match after {
        Some(a) => t.range::<&str>((std::ops::Bound::Excluded(a), std::ops::Bound::Unbounded))?,
        None => t.range::<&str>(..)?,
    };
    let mut ids = Vec::with_capacity(limit);
    for row in range.take(limit) {
        ids.push(row?.0.value().to_owned());
    }
    Ok(ids)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Store, StoreOptions};

    /// A copy of a committed database written by an older release.
    fn fixture(name: &str) -> (tempfile::TempDir, PathBuf) {
        let src = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures")
            .join(name);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("scimbridge.redb");
        std::fs::copy(&src, &path).unwrap();
        (dir, path)
    }

    fn version_of(path: &Path) -> Option<u32> {
        let db = Database::open(path).unwrap();
        recorded_version(&db).unwrap()
    }

    #[test]
    fn format_1_is_upgraded_in_place_after_a_backup() {
        let (_dir, path) = fixture("format1/format1.redb");
        assert_eq!(version_of(&path), Some(1));
        let store = Store::open(&path, &StoreOptions::default()).unwrap();
        let snap = store.snapshot().unwrap();
        // The backup is the format-1 database as it was: format 1's lowercase keys.
        let backup = backup_path(&path, 1);
        assert_eq!(version_of(&backup), Some(1));
        {
            let db = Database::open(&backup).unwrap();
            let read = db.begin_read().unwrap();
            let names = read.open_table(USER_NAMES).unwrap();
            assert!(names.get("straße@example.com").unwrap().is_some());
            assert!(names.get("strasse@example.com").unwrap().is_some());
        }
        // Caseless keys: both spellings find the user the index kept, and the two
        // users format 1 kept apart are still both there.
        let kept = snap
            .find_by_user_name("STRASSE@EXAMPLE.COM")
            .unwrap()
            .unwrap();
        assert_eq!(
            snap.find_by_user_name("straße@example.com").unwrap(),
            Some(kept)
        );
        assert_eq!(snap.count(ResourceType::User).unwrap(), 5);
        assert_eq!(snap.find_users_by_email("A@EXAMPLE.COM").unwrap().len(), 1);
        assert_eq!(snap.find_groups_by_name("OUTER").unwrap().len(), 1);
        // At most one primary, and the version moved for the one repaired.
        let id = snap
            .find_by_user_name("two.primaries@example.com")
            .unwrap()
            .unwrap();
        let r = snap.get(ResourceType::User, &id).unwrap().unwrap();
        let primaries = r.attrs["emails"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["primary"] == serde_json::json!(true))
            .count();
        assert_eq!((primaries, r.meta.version), (1, 2));
        // Nested memberships and tokens come through untouched.
        let alice = snap
            .find_by_user_name("alice@example.com")
            .unwrap()
            .unwrap();
        let groups = snap.references(ResourceType::User, &alice).unwrap();
        assert_eq!(
            groups
                .iter()
                .map(|g| (g.display.as_deref(), g.indirect))
                .collect::<Vec<_>>(),
            [(Some("Inner"), false), (Some("Outer"), true)]
        );
        // bob's manager alice, written by format 1, is in the manager index the
        // chain of steps ends with (format 6).
        let (index, recomputed) = super::super::reports::index_and_recomputed(snap.txn()).unwrap();
        assert_eq!(index.len(), 1);
        assert_eq!(index, recomputed);
        assert!(index.iter().all(|(manager, _)| *manager == alice));
        // The token the format-1 release issued is still there, hash and all (the
        // integration test authenticates with it).
        let token = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/format1/token.txt"),
        )
        .unwrap();
        let hash = crate::store::hex(
            ring::digest::digest(&ring::digest::SHA256, token.trim().as_bytes()).as_ref(),
        );
        let tokens = snap.tokens().unwrap();
        assert_eq!(tokens.len(), 1);
        assert_eq!(
            (tokens[0].name.as_str(), tokens[0].hash.as_str()),
            ("fixture", hash.as_str())
        );
        drop(snap);
        store.close();
        drop(store);
        assert_eq!(version_of(&path), Some(FORMAT_VERSION));
        // Opening again does nothing more.
        std::fs::remove_file(backup_path(&path, 1)).unwrap();
        let again = Store::open(&path, &StoreOptions::default()).unwrap();
        again.close();
        assert!(!backup_path(&path, 1).exists());
    }

    #[test]
    fn format_2_membership_rows_get_the_members_names() {
        let (_dir, path) = fixture("format2/format2.redb");
        assert_eq!(version_of(&path), Some(2));
        let store = Store::open(&path, &StoreOptions::default()).unwrap();
        assert_eq!(
            store.upgraded().map(|u| (u.from, u.to)),
            Some((2, FORMAT_VERSION))
        );
        assert_eq!(version_of(&backup_path(&path, 2)), Some(2));
        let snap = store.snapshot().unwrap();
        let id = |name: &str| snap.find_by_user_name(name).unwrap().unwrap();
        let (alice, bob) = (id("alice@example.com"), id("bob@example.com"));
        let group = |name: &str| snap.find_groups_by_name(name).unwrap()[0].clone();
        let rows = |g: &str| -> Vec<(String, Vec<u8>)> {
            let t = snap.txn.open_table(MEMBERS).unwrap();
            t.range((g, "")..)
                .unwrap()
                .map(|r| r.unwrap())
                .take_while(|(k, _)| k.value().0 == g)
                .map(|(k, v)| (k.value().1.to_owned(), v.value().to_vec()))
                .collect()
        };
        let own =
            |code: u8, name: &str| [&[code | super::super::OWN_NAME][..], name.as_bytes()].concat();
        // The display the client gave stays as it was; rows without one now hold
        // the member's own name (a user's userName when it has no displayName, a
        // group's displayName).
        let mut shown = rows(&group("Shown"));
        shown.sort();
        let mut want = vec![
            (alice.clone(), [&[1u8][..], b"Alice from Okta"].concat()),
            (bob.clone(), own(1, "bob@example.com")),
        ];
        want.sort();
        assert_eq!(shown, want);
        assert_eq!(
            rows(&group("Inner")),
            [(alice.clone(), own(1, "alice@example.com"))]
        );
        assert_eq!(rows(&group("Outer")), [(group("Inner"), own(2, "Inner"))]);
        let refs = snap
            .references(ResourceType::Group, &group("Outer"))
            .unwrap();
        assert_eq!(refs[0].display.as_deref(), Some("Inner"));
        assert_eq!(refs[0].rt, ResourceType::Group);
        drop(snap);
        store.close();
    }

    #[test]
    fn format_3_admin_password_becomes_the_account_admin() {
        let (_dir, path) = fixture("format3/format3.redb");
        assert_eq!(version_of(&path), Some(3));
        let before = {
            let db = Database::open(&path).unwrap();
            let read = db.begin_read().unwrap();
            let settings = read.open_table(SETTINGS).unwrap();
            let bytes = settings
                .get("admin_password")
                .unwrap()
                .unwrap()
                .value()
                .to_vec();
            serde_json::from_slice::<super::super::AdminPassword>(&bytes).unwrap()
        };
        let store = Store::open(&path, &StoreOptions::default()).unwrap();
        assert_eq!(
            store.upgraded().map(|u| (u.from, u.to)),
            Some((3, FORMAT_VERSION))
        );
        assert_eq!(version_of(&backup_path(&path, 3)), Some(3));
        let snap = store.snapshot().unwrap();
        let accounts = snap.admin_accounts().unwrap();
        assert_eq!(accounts.len(), 1);
        assert_eq!(accounts[0].name, "admin");
        assert_eq!(accounts[0].password.as_ref(), Some(&before));
        // The old keys are gone; the format-3 token reads as active, not superseded.
        let settings = snap.txn.open_table(SETTINGS).unwrap();
        assert!(settings.get("admin_password").unwrap().is_none());
        assert!(settings.get("admin_setup").unwrap().is_none());
        let tokens = snap.tokens().unwrap();
        assert_eq!(tokens.len(), 1);
        assert_eq!(tokens[0].superseded, None);
        // Format 3 refused two of make.sh's users (caseless twin, two primaries).
        assert_eq!(snap.count(ResourceType::User).unwrap(), 3);
        drop(settings);
        drop(snap);
        store.close();
    }

    #[test]
    fn format_4_gets_tables_of_every_user_and_group_id() {
        let (_dir, path) = fixture("format4/format4.redb");
        assert_eq!(version_of(&path), Some(4));
        let store = Store::open(&path, &StoreOptions::default()).unwrap();
        assert_eq!(
            store.upgraded().map(|u| (u.from, u.to)),
            Some((4, FORMAT_VERSION))
        );
        assert_eq!(version_of(&backup_path(&path, 4)), Some(4));
        let snap = store.snapshot().unwrap();
        for rt in ResourceType::ALL {
            let keys = |def: redb::TableDefinition<'static, &'static str, &'static [u8]>| {
                let t = snap.txn.open_table(def).unwrap();
                t.iter()
                    .unwrap()
                    .map(|r| r.unwrap().0.value().to_owned())
                    .collect::<Vec<_>>()
            };
            let ids: Vec<String> = {
                let t = snap.txn.open_table(id_table(rt)).unwrap();
                t.iter()
                    .unwrap()
                    .map(|r| r.unwrap().0.value().to_owned())
                    .collect()
            };
            assert_eq!(ids, keys(table(rt)), "{}", rt.name());
            assert_eq!(ids.len(), 3, "{}", rt.name());
            // Offset paging reads from the id table: skipping 1 starts at the second.
            let mut seen = Vec::new();
            snap.scan_skipping(rt, 1, |r| {
                seen.push(r.id);
                Ok(true)
            })
            .unwrap();
            assert_eq!(seen, ids[1..]);
        }
        let tokens = snap.tokens().unwrap();
        assert_eq!(tokens.len(), 1);
        assert_eq!(snap.admin_accounts().unwrap()[0].name, "admin");
        drop(snap);
        store.close();
    }

    #[test]
    fn format_5_gets_the_manager_index_and_loses_links_to_deleted_managers() {
        use crate::scim::schema::ENTERPRISE_USER_URN;
        let (_dir, path) = fixture("format5/format5.redb");
        assert_eq!(version_of(&path), Some(5));
        let store = Store::open(&path, &StoreOptions::default()).unwrap();
        let up = store.upgraded().unwrap().clone();
        assert_eq!((up.from, up.to), (5, FORMAT_VERSION));
        assert_eq!(version_of(&backup_path(&path, 5)), Some(5));
        let snap = store.snapshot().unwrap();
        let id = |name: &str| snap.find_by_user_name(name).unwrap().unwrap();
        let (alice, bob, carol) = (
            id("alice@example.com"),
            id("bob@example.com"),
            id("carol@example.com"),
        );
        // bob's manager is alice: the one link, indexed.
        let (index, recomputed) = super::super::reports::index_and_recomputed(snap.txn()).unwrap();
        assert_eq!(index, [(alice.clone(), bob.clone())].into_iter().collect());
        assert_eq!(index, recomputed);
        let bob_r = snap.get(ResourceType::User, &bob).unwrap().unwrap();
        assert_eq!(bob_r.meta.version, 1);
        // carol's manager dave was deleted under format 5, which kept the link: the
        // upgrade removes it as a delete now does, and says so.
        let carol_r = snap.get(ResourceType::User, &carol).unwrap().unwrap();
        assert_eq!(carol_r.attrs.get(ENTERPRISE_USER_URN), None);
        assert_eq!(
            (carol_r.meta.version, carol_r.meta.last_modified.clone()),
            (2, up.now.to_rfc3339())
        );
        assert_eq!(up.notes.len(), 1, "{:?}", up.notes);
        assert!(
            up.notes[0].starts_with(&format!("User {carol}: its manager ")),
            "{:?}",
            up.notes
        );
        drop(snap);
        // The backup still holds the link as format 5 wrote it.
        {
            let db = Database::open(backup_path(&path, 5)).unwrap();
            let read = db.begin_read().unwrap();
            let users = read.open_table(table(ResourceType::User)).unwrap();
            let record = users.get(carol.as_str()).unwrap().unwrap();
            assert!(std::str::from_utf8(record.value())
                .unwrap()
                .contains("manager"));
        }
        // Deleting alice now clears bob's manager.
        let target = crate::store::Target {
            rt: ResourceType::User,
            id: alice,
            if_match: None,
        };
        store
            .write_blocking(move |txn| {
                super::super::delete_in(
                    txn,
                    &target,
                    &crate::store::Actor::system("test"),
                    Timestamp::now(),
                )
            })
            .unwrap();
        let snap = store.snapshot().unwrap();
        let bob_r = snap.get(ResourceType::User, &bob).unwrap().unwrap();
        assert_eq!(
            bob_r.attrs[ENTERPRISE_USER_URN],
            serde_json::json!({"department": "R&D"})
        );
        assert_eq!(bob_r.meta.version, 2);
        drop(snap);
        store.close();
    }

    #[test]
    fn a_failed_upgrade_leaves_the_file_as_it_was() {
        let (_dir, path) = fixture("format1/format1.redb");
        let db = Database::create(&path).unwrap();
        // The real step, then one that fails: one transaction, so nothing of the
        // first remains either.
        let steps = [
            Step {
                from: 1,
                what: "v1_to_v2",
                run: v1_to_v2,
            },
            Step {
                from: 2,
                what: "fails",
                run: |_, _| Err(StoreError::Storage("injected".into())),
            },
        ];
        let err = run_steps(&db, &steps, 1, PathBuf::new(), Timestamp::now());
        assert!(err.is_err());
        drop(db);
        assert_eq!(version_of(&path), Some(1));
        let db = Database::open(&path).unwrap();
        let read = db.begin_read().unwrap();
        let names = read.open_table(USER_NAMES).unwrap();
        // Still format 1's lowercase keys: "straße" was not folded to "strasse".
        assert!(names.get("straße@example.com").unwrap().is_some());
    }

    #[test]
    fn newer_and_unknown_versions_are_refused() {
        let p = Path::new("x.redb");
        assert!(!check_version(p, FORMAT_VERSION).unwrap());
        assert!(check_version(p, 1).unwrap());
        for v in [0, FORMAT_VERSION + 1] {
            assert!(
                matches!(check_version(p, v), Err(StoreError::Format(_))),
                "{v}"
            );
        }
    }

    #[test]
    fn every_step_starts_where_the_previous_ended() {
        for (i, s) in STEPS.iter().enumerate() {
            assert_eq!(s.from, STEPS[0].from + i as u32);
        }
        assert_eq!(STEPS.last().map(|s| s.from + 1), Some(FORMAT_VERSION));
    }
}
