//! The tables of one write transaction, each opened at its first use and kept open
//! until a job asks for the bare transaction or the batch commits ([`WriteTables`]).
//! A group commit runs many writer jobs in one transaction; opening and closing a
//! redb table costs ≈ 3,500 instructions, and a user create touches seven of them,
//! so a batch of creates opening them once instead of once per create saves about
//! a tenth of a create's CPU (issue 10, docs/PERFORMANCE.md "Durable creates").
//! This module knows which tables a resource write touches, not what is in them.

use redb::{MultimapTable, Table, WriteTransaction};

use super::{
    audit::AUDIT, id_table, table, StoreResult, EMAILS, EVENTS, EXTERNAL_IDS, GROUP_NAMES,
    USER_NAMES,
};
use crate::scim::schema::ResourceType;

type Records<'t> = Table<'t, &'static str, &'static [u8]>;
type Ids<'t> = Table<'t, &'static str, ()>;

/// The open tables of write transaction `'t`. redb refuses to open a table twice, so
/// code that opens tables itself must take the transaction through
/// [`WriteTables::txn`], which closes every table held here first; the accessors open
/// them again when next used. Dropped (closing them) before the transaction commits.
pub(crate) struct WriteTables<'t> {
    txn: &'t WriteTransaction,
    users: Option<Records<'t>>,
    groups: Option<Records<'t>>,
    user_ids: Option<Ids<'t>>,
    group_ids: Option<Ids<'t>>,
    user_names: Option<Table<'t, &'static str, &'static str>>,
    group_names: Option<MultimapTable<'t, &'static str, &'static str>>,
    emails: Option<MultimapTable<'t, &'static str, &'static str>>,
    external_ids: Option<MultimapTable<'t, (u8, &'static str), &'static str>>,
    events: Option<Table<'t, u64, &'static [u8]>>,
    audit: Option<Table<'t, u64, &'static [u8]>>,
}

/// The table in `slot`, opened by `open` when it is not open yet.
fn opened<T>(
    slot: &mut Option<T>,
    open: impl FnOnce() -> Result<T, redb::TableError>,
) -> StoreResult<&mut T> {
    let t = match slot.take() {
        Some(t) => t,
        None => open()?,
    };
    Ok(slot.insert(t))
}

impl<'t> WriteTables<'t> {
    /// No table open yet.
    pub(crate) fn new(txn: &'t WriteTransaction) -> WriteTables<'t> {
        WriteTables {
            txn,
            users: None,
            groups: None,
            user_ids: None,
            group_ids: None,
            user_names: None,
            group_names: None,
            emails: None,
            external_ids: None,
            events: None,
            audit: None,
        }
    }

    /// The transaction itself, for code that opens its own tables: every table held
    /// here is closed first (its changes stay in the transaction).
    pub(crate) fn txn(&mut self) -> &'t WriteTransaction {
        self.close();
        self.txn
    }

    /// Closes every table held here.
    fn close(&mut self) {
        self.users = None;
        self.groups = None;
        self.user_ids = None;
        self.group_ids = None;
        self.user_names = None;
        self.group_names = None;
        self.emails = None;
        self.external_ids = None;
        self.events = None;
        self.audit = None;
    }

    /// Resource id → record (`users` or `groups`).
    pub(super) fn records(&mut self, rt: ResourceType) -> StoreResult<&mut Records<'t>> {
        let txn = self.txn;
        let slot = match rt {
            ResourceType::User => &mut self.users,
            ResourceType::Group => &mut self.groups,
        };
        opened(slot, || txn.open_table(table(rt)))
    }

    /// Every id of the type (`user_ids` or `group_ids`).
    pub(super) fn ids(&mut self, rt: ResourceType) -> StoreResult<&mut Ids<'t>> {
        let txn = self.txn;
        let slot = match rt {
            ResourceType::User => &mut self.user_ids,
            ResourceType::Group => &mut self.group_ids,
        };
        opened(slot, || txn.open_table(id_table(rt)))
    }

    /// Caseless userName → user id.
    pub(super) fn user_names(&mut self) -> StoreResult<&mut Table<'t, &'static str, &'static str>> {
        let txn = self.txn;
        opened(&mut self.user_names, || txn.open_table(USER_NAMES))
    }

    /// Caseless group displayName → group ids.
    pub(super) fn group_names(
        &mut self,
    ) -> StoreResult<&mut MultimapTable<'t, &'static str, &'static str>> {
        let txn = self.txn;
        opened(&mut self.group_names, || {
            txn.open_multimap_table(GROUP_NAMES)
        })
    }

    /// Caseless email value → user ids.
    pub(super) fn emails(
        &mut self,
    ) -> StoreResult<&mut MultimapTable<'t, &'static str, &'static str>> {
        let txn = self.txn;
        opened(&mut self.emails, || txn.open_multimap_table(EMAILS))
    }

    /// (resource type, externalId) → ids.
    pub(super) fn external_ids(
        &mut self,
    ) -> StoreResult<&mut MultimapTable<'t, (u8, &'static str), &'static str>> {
        let txn = self.txn;
        opened(&mut self.external_ids, || {
            txn.open_multimap_table(EXTERNAL_IDS)
        })
    }

    /// The change events (the migration mirror's feed).
    pub(super) fn events(&mut self) -> StoreResult<&mut Table<'t, u64, &'static [u8]>> {
        let txn = self.txn;
        opened(&mut self.events, || txn.open_table(EVENTS))
    }

    /// The audit log.
    pub(super) fn audit(&mut self) -> StoreResult<&mut Table<'t, u64, &'static [u8]>> {
        let txn = self.txn;
        opened(&mut self.audit, || txn.open_table(AUDIT))
    }
}
