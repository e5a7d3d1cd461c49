//! The registry of every table in the database. Creating the tables at open and
//! copying them into a backup both walk `ALL`, so a table added to the store and
//! registered here is created and backed up without further code; the unit test
//! below fails when the database holds a table that is not registered or a backup
//! misses a row.

use redb::{
    Key, MultimapTableDefinition, MultimapTableHandle, ReadTransaction, ReadableMultimapTable,
    ReadableTable, TableDefinition, TableHandle, Value, WriteTransaction,
};

use super::{
    admin, audit, migration, reports, tokens, traffic, StoreResult, EMAILS, EVENTS, EXTERNAL_IDS,
    GROUPS, GROUP_IDS, GROUP_NAMES, MEMBERS, MEMBER_OF, SETTINGS, USERS, USER_IDS, USER_NAMES,
};

/// What the store does with every table, whatever its key and value types.
pub(super) trait Table: Sync {
    fn name(&self) -> &str;
    /// Creates the table if it does not exist.
    fn create(&self, txn: &WriteTransaction) -> StoreResult<()>;
    /// Copies every row of `src`'s table into `dst`'s.
    fn copy(&self, src: &ReadTransaction, dst: &WriteTransaction) -> StoreResult<()>;
    /// Every (key, value) as bytes, in key order (for tests and checks).
    #[cfg(test)]
    fn rows(&self, txn: &ReadTransaction) -> StoreResult<Vec<(Vec<u8>, Vec<u8>)>>;
}

/// A table with one value per key.
pub(super) struct Plain<K: Key + 'static, V: Value + 'static>(
    pub(super) TableDefinition<'static, K, V>,
);

/// A table with a set of values per key.
pub(super) struct Multi<K: Key + 'static, V: Key + 'static>(
    pub(super) MultimapTableDefinition<'static, K, V>,
);

impl<K: Key + Sync + 'static, V: Value + Sync + 'static> Table for Plain<K, V> {
    fn name(&self) -> &str {
        self.0.name()
    }

    fn create(&self, txn: &WriteTransaction) -> StoreResult<()> {
        txn.open_table(self.0)?;
        Ok(())
    }

    fn copy(&self, src: &ReadTransaction, dst: &WriteTransaction) -> StoreResult<()> {
        let from = src.open_table(self.0)?;
        let mut to = dst.open_table(self.0)?;
        for row in from.iter()? {
            let (k, v) = row?;
            to.insert(k.value(), v.value())?;
        }
        Ok(())
    }

    #[cfg(test)]
    fn rows(&self, txn: &ReadTransaction) -> StoreResult<Vec<(Vec<u8>, Vec<u8>)>> {
        let mut out = Vec::new();
        for row in txn.open_table(self.0)?.iter()? {
            let (k, v) = row?;
            out.push((
                K::as_bytes(&k.value()).as_ref().to_vec(),
                V::as_bytes(&v.value()).as_ref().to_vec(),
            ));
        }
        Ok(out)
    }
}

impl<K: Key + Sync + 'static, V: Key + Sync + 'static> Table for Multi<K, V> {
    fn name(&self) -> &str {
        self.0.name()
    }

    fn create(&self, txn: &WriteTransaction) -> StoreResult<()> {
        txn.open_multimap_table(self.0)?;
        Ok(())
    }

    fn copy(&self, src: &ReadTransaction, dst: &WriteTransaction) -> StoreResult<()> {
        let from = src.open_multimap_table(self.0)?;
        let mut to = dst.open_multimap_table(self.0)?;
        for row in from.iter()? {
            let (k, values) = row?;
            for v in values {
                to.insert(k.value(), v?.value())?;
            }
        }
        Ok(())
    }

    #[cfg(test)]
    fn rows(&self, txn: &ReadTransaction) -> StoreResult<Vec<(Vec<u8>, Vec<u8>)>> {
        let mut out = Vec::new();
        for row in txn.open_multimap_table(self.0)?.iter()? {
            let (k, values) = row?;
            for v in values {
                out.push((
                    K::as_bytes(&k.value()).as_ref().to_vec(),
                    V::as_bytes(&v?.value()).as_ref().to_vec(),
                ));
            }
        }
        Ok(out)
    }
}

/// Every table of the database.
pub(super) static ALL: &[&dyn Table] = &[
    &Plain(SETTINGS),
    &Plain(USERS),
    &Plain(GROUPS),
    &Plain(USER_IDS),
    &Plain(GROUP_IDS),
    &Plain(USER_NAMES),
    &Multi(EXTERNAL_IDS),
    &Multi(GROUP_NAMES),
    &Multi(EMAILS),
    &Plain(MEMBERS),
    &Plain(MEMBER_OF),
    &Plain(reports::REPORTS),
    &Plain(EVENTS),
    &Plain(audit::AUDIT),
    &Plain(tokens::TOKENS),
    &Plain(tokens::TOKEN_HASHES),
    &Plain(traffic::TOKEN_TRAFFIC),
    &Plain(admin::ACCOUNTS),
    &Plain(admin::SETUP_CODES),
    &Plain(migration::MIGRATION_MAP),
];

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use redb::ReadableDatabase;
    use serde_json::json;

    use super::super::{Actor, MemberRef, Scope, Store, StoreOptions, TokenRecord};
    use super::*;
    use crate::clock::Timestamp;
    use crate::scim::schema::ResourceType;

    /// A store with at least one row in every table the bridge writes.
    fn filled(dir: &std::path::Path) -> Store {
        let store = Store::open(&dir.join("db.redb"), &StoreOptions::default()).unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(async {
            let now = Timestamp::now();
            let attrs = |v: serde_json::Value| v.as_object().unwrap().clone();
            let user = store
                .create(
                    ResourceType::User,
                    attrs(json!({"userName": "ada", "externalId": "e1",
                                 "emails": [{"value": "ada@example.com"}]})),
                    vec![],
                    Actor::system("test"),
                    now,
                    None,
                )
                .await
                .unwrap()
                .resource;
            // A manager link (the `reports` index).
            store
                .create(
                    ResourceType::User,
                    attrs(
                        json!({"userName": "bea", crate::scim::schema::ENTERPRISE_USER_URN:
                                 {"manager": {"value": user.id}}}),
                    ),
                    vec![],
                    Actor::system("test"),
                    now,
                    None,
                )
                .await
                .unwrap();
            let member = MemberRef {
                id: user.id.clone(),
                rt: None,
                display: None,
            };
            store
                .create(
                    ResourceType::Group,
                    attrs(json!({"displayName": "Eng"})),
                    vec![member],
                    Actor::system("test"),
                    now,
                    None,
                )
                .await
                .unwrap();
            let record = TokenRecord {
                id: "t1".into(),
                name: "okta".into(),
                hash: "00ff".into(),
                scope: Scope::ReadWrite,
                created: now,
                expires: None,
                last_used: None,
                revoked: None,
                superseded: None,
                quiet_after_minutes: None,
            };
            store.add_token(record, vec![0x00, 0xff]).await.unwrap();
            let mut traffic = crate::store::TokenTraffic::default();
            traffic.count(201, None, now);
            store
                .record_token_use(
                    vec![("t1".into(), now)],
                    vec![("t1".into(), traffic.clone())],
                    Some(traffic),
                )
                .await
                .unwrap();
            let entry = crate::store::AuditRecord {
                seq: 0,
                time: now,
                actor_kind: crate::store::ActorKind::Cli,
                actor: "root".into(),
                client: None,
                action: "token.issue".into(),
                resource_type: Some("Token".into()),
                resource_id: Some("t1".into()),
                resource_name: Some("okta".into()),
                outcome: crate::store::AuditOutcome::Done,
                status: None,
                reason: None,
            };
            store.append_audit(vec![entry]).await.unwrap();
            for (purpose, hash) in [
                (super::super::CodePurpose::NewAccount("ada".into()), "c1"),
                (super::super::CodePurpose::FirstAccount, "c2"),
            ] {
                let expires = now.saturating_add(time::Duration::hours(1));
                store
                    .add_admin_setup_code(purpose, hash.into(), expires, true, now)
                    .await
                    .unwrap()
                    .unwrap();
            }
            store
                .map_ids(vec![(ResourceType::User, user.id, Some("remote".into()))])
                .await
                .unwrap();
        });
        store
    }

    fn names_in(db: &redb::Database) -> BTreeSet<String> {
        let txn = db.begin_read().unwrap();
        let mut names: BTreeSet<String> = txn
            .list_tables()
            .unwrap()
            .map(|t| t.name().to_owned())
            .collect();
        names.extend(
            txn.list_multimap_tables()
                .unwrap()
                .map(|t| t.name().to_owned()),
        );
        names
    }

    #[test]
    fn backup_copies_every_registered_table_row_for_row() {
        let dir = tempfile::tempdir().unwrap();
        let store = filled(dir.path());
        let out = dir.path().join("backup.redb");
        store.backup_to(&out).unwrap();
        let registered: BTreeSet<String> = ALL.iter().map(|t| t.name().to_owned()).collect();
        assert_eq!(registered.len(), ALL.len(), "a table is registered twice");
        let src = store.snapshot().unwrap();
        store.close();
        let backup = redb::Database::open(&out).unwrap();
        let copy = backup.begin_read().unwrap();
        for table in ALL {
            let rows = table.rows(src.txn()).unwrap();
            assert!(
                !rows.is_empty(),
                "the fixture leaves {} empty: fill it, or the test proves nothing for it",
                table.name()
            );
            assert_eq!(rows, table.rows(&copy).unwrap(), "{}", table.name());
        }
        // Nothing in the database or the backup escapes the registry.
        assert_eq!(names_in(&backup), registered);
    }

    #[test]
    fn every_table_in_a_used_database_is_registered() {
        let dir = tempfile::tempdir().unwrap();
        let store = filled(dir.path());
        store.close();
        drop(store);
        let db = redb::Database::open(dir.path().join("db.redb")).unwrap();
        let registered: BTreeSet<String> = ALL.iter().map(|t| t.name().to_owned()).collect();
        assert_eq!(names_in(&db), registered);
    }
}
