//! The directory's storage: one redb file holding resources, their unique and lookup
//! indexes, group memberships in both directions, the change/audit events, tokens and
//! settings. It offers a typed API (no HTTP types) to the layers above.
//!
//! Writes go through one writer thread that batches concurrent requests into one
//! transaction and one fsync (group commit); each caller gets its answer only after
//! the commit that holds its write is durable. Every write operation first checks
//! (reads only) and then writes, so a check that fails leaves the shared transaction
//! untouched; a storage error while writing aborts the whole batch.
//!
//! Reads use a redb read transaction: a consistent snapshot (`Snapshot`).

mod admin;
pub(crate) mod audit;
mod cycles;
mod health;
mod migration;
mod nesting;
mod open;
mod readahead;
mod reports;
mod row;
mod tables;
mod tokens;
mod traffic;
mod upgrade;

pub(crate) use admin::{
    AccountRefusal, AdminAccount, AdminPassword, CodePurpose, SetupCode, SetupRefusal,
};
pub(crate) use audit::{ActorKind, AuditOutcome, AuditRecord};
pub(crate) use health::{StorageHealth, COMMIT_BUCKETS};
pub(crate) use migration::{
    LastVerify, ListedDifference, MigrationState, Phase, StoredPolicy, KEPT_DIFFERENCES,
};
pub(crate) use open::WriteTables;
pub(crate) use tokens::{hex, RevokeWhich, Scope, TokenRecord, TokenState};
pub(crate) use traffic::{hour_of, OutcomeClass, OutcomeCounts, TokenTraffic};
pub(crate) use upgrade::{Upgrade, FORMAT_VERSION};

use readahead::{walking, Ahead, Walk};
use reports::check_manager;

use std::any::Any;
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc, Mutex, OnceLock};
use std::thread::JoinHandle;

use redb::{
    AccessGuard, Database, MultimapTableDefinition, ReadOnlyTable, ReadTransaction,
    ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition, WriteTransaction,
};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::clock::Timestamp;
use crate::scim::error::ScimError;
use crate::scim::resource::{Attributes, Meta, Reference, ReferenceText};
use crate::scim::schema::ResourceType;
use crate::scim::text::caseless;
pub(crate) use row::{RawResource, StoredText};

pub(crate) const SETTINGS: TableDefinition<&str, &[u8]> = TableDefinition::new("settings");
const USERS: TableDefinition<&str, &[u8]> = TableDefinition::new("users");
const GROUPS: TableDefinition<&str, &[u8]> = TableDefinition::new("groups");
/// caseless userName (NFC + case folding, `scim::text::caseless`) → user id
/// (userName is unique, caseExact false).
const USER_NAMES: TableDefinition<&str, &str> = TableDefinition::new("idx_user_name");
/// (resource type, externalId) → ids (externalId is caseExact, not unique).
const EXTERNAL_IDS: MultimapTableDefinition<(u8, &str), &str> =
    MultimapTableDefinition::new("idx_external_id");
/// caseless Group displayName → group ids.
const GROUP_NAMES: MultimapTableDefinition<&str, &str> =
    MultimapTableDefinition::new("idx_group_name");
/// caseless email value → user ids.
const EMAILS: MultimapTableDefinition<&str, &str> = MultimapTableDefinition::new("idx_email");
/// (group id, member id) → one byte, the member's resource type code (1 User, 2
/// Group) with [`OWN_NAME`] set when the name that follows is the member's own, then
/// the name a group shows for that member (UTF-8): the `display` the client gave, or
/// else the member's current name (kept up to date on rename), so a group's members
/// render without reading any member (format 3).
const MEMBERS: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("members");
/// Flag in a MEMBERS value's first byte: the name is the member's own (no `display`
/// was given), rewritten when the member is renamed.
const OWN_NAME: u8 = 0x80;
/// (member id, group id) → (): the reverse of MEMBERS.
const MEMBER_OF: TableDefinition<(&str, &str), ()> = TableDefinition::new("member_of");
/// user id → (): every user's id and nothing else (format 5). Offset paging in id
/// order (`startIndex` without `sortBy`) steps over keys here: a row of `users`
/// holds the whole stored resource (~1.5 kB), so skipping 500,000 of them crossed
/// ~190,000 leaf pages; these keys fill ~1/30 of that (issue 10).
const USER_IDS: TableDefinition<&str, ()> = TableDefinition::new("user_ids");
/// group id → (): as `USER_IDS`, for groups.
const GROUP_IDS: TableDefinition<&str, ()> = TableDefinition::new("group_ids");
/// sequence → change/audit event (JSON).
const EVENTS: TableDefinition<u64, &[u8]> = TableDefinition::new("events");

const FORMAT_KEY: &str = "format_version";
/// Most jobs one commit carries; bounds the latency a batch adds.
const MAX_BATCH: usize = 256;

#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// A protocol-level refusal (not found, uniqueness, precondition, bad member).
    /// Shown as its detail alone: that is the sentence meant for a person (the
    /// status and scimType are for SCIM clients, which get them from `http`).
    #[error("{}", .0.detail)]
    Scim(ScimError),
    #[error("storage error: {0}")]
    Storage(String),
    /// The disk holding the database is full (ENOSPC, a quota, the file size limit):
    /// the write was not stored; writes resume by themselves when space returns.
    #[error("the disk holding the database is full: {0}")]
    DiskFull(String),
    /// An I/O error: the operation was not done; the store reopens the database.
    #[error("storage I/O error: {0}")]
    Io(String),
    #[error("the database {0} is in use by another process (is the bridge server running?)")]
    AlreadyOpen(PathBuf),
    #[error("{0}")]
    Format(String),
    #[error("the store is shutting down")]
    Closed,
    /// A multi-step job gave up part-way; its whole transaction is rolled back.
    #[error("{0}")]
    Aborted(String),
}

impl From<ScimError> for StoreError {
    fn from(e: ScimError) -> Self {
        StoreError::Scim(e)
    }
}

macro_rules! storage_from {
    ($($t:ty),*) => {$(
        impl From<$t> for StoreError {
            fn from(e: $t) -> Self { StoreError::Storage(e.to_string()) }
        }
    )*};
}
storage_from!(serde_json::Error);

/// redb's errors keep their kind: a full disk and I/O failures are told apart from
/// the rest (`health::classify`), because the writer must reopen the database after
/// them and the edge answers a full disk with 507.
macro_rules! redb_from {
    ($($t:ty),*) => {$(
        impl From<$t> for StoreError {
            fn from(e: $t) -> Self { health::classify(redb::Error::from(e)) }
        }
    )*};
}
redb_from!(
    redb::StorageError,
    redb::TableError,
    redb::TransactionError,
    redb::CommitError
);

impl From<redb::Error> for StoreError {
    fn from(e: redb::Error) -> Self {
        health::classify(e)
    }
}

pub(crate) type StoreResult<T> = Result<T, StoreError>;

fn rt_code(rt: ResourceType) -> u8 {
    match rt {
        ResourceType::User => 1,
        ResourceType::Group => 2,
    }
}

fn rt_from_code(code: u8) -> ResourceType {
    if code & !OWN_NAME == 2 {
        ResourceType::Group
    } else {
        ResourceType::User
    }
}

/// One row of a resource table as redb yields it: the id and the stored bytes.
type RawRow<'a> = Result<
    (
        AccessGuard<'a, &'static str>,
        AccessGuard<'a, &'static [u8]>,
    ),
    redb::StorageError,
>;

/// Hands `f` each row's stored bytes until it returns false.
fn feed_raw<'a>(
    rows: impl Iterator<Item = RawRow<'a>>,
    mut f: impl FnMut(RawResource<'_>) -> StoreResult<bool>,
) -> StoreResult<()> {
    for row in rows {
        let (_, v) = row?;
        if !f(RawResource(v.value()))? {
            break;
        }
    }
    Ok(())
}

/// Rows a side of `Snapshot::scan_raw_halves` claims at once: one lock and one id
/// copy per batch, and at most this many rows read past the meeting point.
const SPLIT_BATCH: usize = 64;

/// Which half of a split scan.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Half {
    /// From the first row on.
    Lower,
    /// From the middle row on, to the last.
    Upper,
}

/// Where the two halves of a split scan have got to: the highest id the lower half
/// has claimed, and the first (lowest) id the upper half claimed; after an error,
/// both stop.
#[derive(Default)]
struct Meeting {
    lower_high: Option<String>,
    upper_low: Option<String>,
    failed: bool,
}

/// One half of `Snapshot::scan_raw_halves`, walking up: reads `SPLIT_BATCH` rows and
/// claims, under the lock, those the other half cannot have (the lower half: ids
/// before the upper half's first; the upper half: ids after the lower half's last),
/// then visits them. The lower half stops at the first row the upper half holds; the
/// upper half goes on to the end (once it has claimed a row, the lower half can no
/// longer pass it).
fn claim_rows<'a>(
    rows: impl Iterator<Item = RawRow<'a>>,
    half: Half,
    meeting: &Mutex<Meeting>,
    mut visit: impl FnMut(RawResource<'_>) -> StoreResult<()>,
) -> StoreResult<()> {
    let meet = || meeting.lock().unwrap_or_else(|p| p.into_inner());
    let mut rows = rows.fuse();
    let mut batch = Vec::with_capacity(SPLIT_BATCH);
    let walked = (|| loop {
        batch.clear();
        for row in rows.by_ref().take(SPLIT_BATCH) {
            batch.push(row?);
        }
        let (skip, claimed) = {
            let mut guard = meet();
            let m = &mut *guard;
            if m.failed {
                return Ok(());
            }
            match half {
                Half::Lower => {
                    let n = batch
                        .iter()
                        .take_while(|(k, _)| m.upper_low.as_deref().is_none_or(|u| k.value() < u))
                        .count();
                    if let Some((k, _)) = n.checked_sub(1).map(|last| &batch[last]) {
                        m.lower_high = Some(k.value().to_owned());
                    }
                    (0, n)
                }
                Half::Upper => {
                    let skip = batch
                        .iter()
                        .take_while(|(k, _)| {
                            m.lower_high.as_deref().is_some_and(|l| k.value() <= l)
                        })
                        .count();
                    if let (None, Some((k, _))) = (&m.upper_low, batch.get(skip)) {
                        m.upper_low = Some(k.value().to_owned());
                    }
                    (skip, batch.len() - skip)
                }
            }
        };
        let end = batch.len() < SPLIT_BATCH || (half == Half::Lower && claimed < batch.len());
        for (_, v) in batch.drain(..).skip(skip).take(claimed) {
            visit(RawResource(v.value()))?;
        }
        if end {
            return Ok(());
        }
    })();
    if walked.is_err() {
        meet().failed = true;
    }
    walked
}

fn table(rt: ResourceType) -> TableDefinition<'static, &'static str, &'static [u8]> {
    match rt {
        ResourceType::User => USERS,
        ResourceType::Group => GROUPS,
    }
}

/// The table of a type's ids alone ([`USER_IDS`], [`GROUP_IDS`]).
fn id_table(rt: ResourceType) -> TableDefinition<'static, &'static str, ()> {
    match rt {
        ResourceType::User => USER_IDS,
        ResourceType::Group => GROUP_IDS,
    }
}

/// A resource as kept in the store: id, server metadata and the normalized attributes
/// (a group's members live in the membership tables, not here).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub(crate) struct StoredResource {
    pub id: String,
    pub meta: Meta,
    pub attrs: Attributes,
}

/// Who made a change, for the audit trail.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) struct Actor {
    pub token_id: Option<String>,
    pub name: String,
}

impl Actor {
    pub(crate) fn system(name: &str) -> Actor {
        Actor {
            token_id: None,
            name: name.to_owned(),
        }
    }
}

/// What a change event records: stored as the lowercase word (`"create"`, …).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum EventOp {
    /// A resource was created (POST, Bulk POST).
    Create,
    /// A resource changed (PUT, PATCH, or a group whose member was deleted).
    Update,
    /// A resource was deleted.
    Delete,
    /// An export file was imported (resource type User, id `*`).
    Import,
}

impl EventOp {
    /// The stored word: `create`, `update`, `delete` or `import`.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            EventOp::Create => "create",
            EventOp::Update => "update",
            EventOp::Delete => "delete",
            EventOp::Import => "import",
        }
    }
}

impl std::fmt::Display for EventOp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One entry of the change/audit log.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub(crate) struct Event {
    pub seq: u64,
    pub time: Timestamp,
    pub actor: Actor,
    pub op: EventOp,
    /// Stored as its name, `"User"` or `"Group"`.
    #[serde(rename = "resourceType")]
    pub resource_type: ResourceType,
    pub id: String,
}

/// A member given by a client: an id and, when the client said, its type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct MemberRef {
    pub id: String,
    pub rt: Option<ResourceType>,
    /// The `display` the client sent for this member, kept as given.
    pub display: Option<String>,
}

/// A member as resolved against the directory.
type Member = (String, ResourceType, Option<String>);

/// A MEMBERS value: the client-given `display`, or else the member's own name.
fn member_value(rt: ResourceType, given: Option<&str>, own: Option<&str>) -> Vec<u8> {
    let (flag, name) = match given {
        Some(d) => (0, d),
        None => (OWN_NAME, own.unwrap_or("")),
    };
    let mut v = Vec::with_capacity(1 + name.len());
    v.push(rt_code(rt) | flag);
    v.extend_from_slice(name.as_bytes());
    v
}

/// A MEMBERS value read back: the member's type, whether the name is its own (not
/// client-given), and the name (none when empty).
fn member_fields(v: &[u8]) -> (ResourceType, bool, Option<&[u8]>) {
    let code = v.first().copied().unwrap_or(1);
    let name = (v.len() > 1).then(|| &v[1..]);
    (rt_from_code(code), code & OWN_NAME != 0, name)
}

/// The member's type and the `display` the client gave, if any.
fn parse_member_value(v: &[u8]) -> (ResourceType, Option<String>) {
    let (rt, own, name) = member_fields(v);
    let given = name.filter(|_| !own);
    (rt, given.map(|n| String::from_utf8_lossy(n).into_owned()))
}

/// What a write does to a group's members.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum MembersChange {
    Keep,
    Set(Vec<MemberRef>),
    /// Add these, and remove those that are members (removing a non-member is a
    /// no-op: IdPs resend removals).
    Delta {
        add: Vec<MemberRef>,
        remove: Vec<String>,
    },
}

/// The resource a write changes, and the version the client expects it to have.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Target {
    pub rt: ResourceType,
    pub id: String,
    /// The client's `If-Match` (or a Bulk operation's `version`): one or more ETags
    /// or `*`, compared weakly (RFC 7644 §3.14); a mismatch is 412 and writes nothing.
    pub if_match: Option<String>,
}

/// An update of one resource: which, by whom, when, and whether the update function
/// needs a group's members materialized into `attrs["members"]` (a general PATCH does;
/// PUT and member-only PATCHes do not, so a big group is never loaded for them).
#[derive(Debug, Clone)]
pub(crate) struct UpdateRequest {
    pub target: Target,
    pub with_members: bool,
    pub actor: Actor,
    pub now: Timestamp,
    /// Appended in the update's transaction when it succeeds (`Store::update`).
    pub audit: Option<AuditOnWrite>,
}

/// The outcome of an update closure: the new attributes and the membership change.
pub(crate) struct Update {
    pub attrs: Attributes,
    pub members: MembersChange,
}

type AnyResult = Result<Box<dyn Any + Send>, StoreError>;

/// A job's work: it runs in the batch's transaction, through the tables the batch
/// keeps open ([`WriteTables`]).
type Work = Box<dyn for<'a, 't> FnOnce(&'a mut WriteTables<'t>) -> AnyResult + Send>;

struct Job {
    run: Work,
    reply: tokio::sync::oneshot::Sender<AnyResult>,
    /// What the job writes: a batch of [`Kind::Bookkeeping`] jobs alone does not
    /// count as a change of the directory (`health::DbSlot::changes`).
    kind: Kind,
}

/// What a write job changes, for the store's change count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Anything a SCIM answer may be rendered from (the default).
    Directory,
    /// Only the server's own bookkeeping (tokens' last use, traffic counts, the `/readyz`
    /// probe): no resource, membership, index or `meta` (`Store::write_bookkeeping`).
    Bookkeeping,
}

/// A change to the copy the database is rewritten into (`Store::rewrite_file`).
type CopyEdit = Box<dyn FnOnce(&WriteTransaction) -> StoreResult<()> + Send>;

/// What the writer thread is asked to do, in order.
enum Msg {
    Write(Job),
    /// Rewrite the database into a fresh file, edited, and go on with that file.
    Rewrite {
        edit: CopyEdit,
        reply: tokio::sync::oneshot::Sender<StoreResult<()>>,
    },
}

struct Inner {
    /// The open database: replaced by the writer thread when the file is rewritten,
    /// reopened after an I/O failure (`health.rs`).
    slot: Arc<health::DbSlot>,
    path: PathBuf,
    writer: Mutex<Option<mpsc::Sender<Msg>>>,
    thread: Mutex<Option<JoinHandle<()>>>,
    /// Known tokens by secret hash, so authentication costs no database read.
    tokens: Mutex<tokens::TokenCache>,
    /// What opening this store upgraded, for callers that report it (the CLI).
    upgraded: Option<Upgrade>,
}

/// A handle on the open store; cheap to clone.
#[derive(Clone)]
pub(crate) struct Store {
    inner: Arc<Inner>,
}

/// The page cache a store gets when the configuration does not size it
/// (`storage.cache_mb` unset): the whole database file when it fits in an eighth of
/// the machine's memory, else that eighth, and never less than 16 MiB nor more
/// than 1 GiB. redb's own default (1 GiB whatever the machine) lets RSS grow toward
/// a gigabyte on a small VM under random reads (DESIGN.md); a fixed 64 MiB made a
/// million-user directory read from the OS for every lookup. `memory` is the
/// memory available to the process in bytes (`None` when unknown: 1 GiB is
/// assumed).
pub(crate) fn default_cache_bytes(file_size: u64, memory: Option<u64>) -> usize {
    const MIN: u64 = 16 << 20;
    const MAX: u64 = 1 << 30;
    let share = memory.unwrap_or(1 << 30) / 8;
    usize::try_from(file_size.min(share).clamp(MIN, MAX)).unwrap_or(MIN as usize)
}

/// Options for opening the store.
#[derive(Debug, Clone)]
pub(crate) struct StoreOptions {
    /// redb page cache size in bytes.
    pub cache_bytes: usize,
    /// Whether walks over a table have the kernel read their next pages ahead
    /// (`storage.read_ahead`, `readahead.rs`).
    pub read_ahead: bool,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            cache_bytes: 64 << 20,
            read_ahead: true,
        }
    }
}

/// A new time-ordered id: a UUIDv7 (RFC 9562 §5.7) for `now`, in lowercase hyphenated
/// text. Ids made in this process sort in creation order even within one millisecond
/// (the `uuid` crate's counter), so inserts land next to each other in the B-tree.
pub(crate) fn new_id(now: Timestamp) -> String {
    static CONTEXT: Mutex<uuid::ContextV7> = Mutex::new(uuid::ContextV7::new());
    let ms = u64::try_from(now.unix_ms()).unwrap_or(0);
    let ts = uuid::Timestamp::from_unix(&CONTEXT, ms / 1000, (ms % 1000) as u32 * 1_000_000);
    uuid::Uuid::new_v7(ts).hyphenated().to_string()
}

/// Opens (creating if needed) the database file as redb's `Builder::create` does, through
/// the backend that reads ahead for walks (`readahead.rs`).
fn open_database(path: &Path, opts: &StoreOptions) -> StoreResult<Database> {
    let cannot = |e: &dyn std::fmt::Display| {
        StoreError::Storage(format!("cannot open {}: {e}", path.display()))
    };
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .map_err(|e| cannot(&e))?;
    let backend = readahead::ReadAheadFile::new(file, opts.read_ahead).map_err(|e| cannot(&e))?;
    redb::Builder::new()
        .set_cache_size(opts.cache_bytes)
        .create_with_backend(backend)
        .map_err(|e| match e {
            redb::DatabaseError::DatabaseAlreadyOpen => StoreError::AlreadyOpen(path.to_owned()),
            other => StoreError::Storage(format!("cannot open {}: {other}", path.display())),
        })
}

impl Store {
    /// Opens (creating if needed) the database file and starts the writer thread. A
    /// file of an older format is upgraded in place first (after a backup copy, see
    /// `upgrade.rs`); a newer one is refused.
    pub(crate) fn open(path: &Path, opts: &StoreOptions) -> StoreResult<Store> {
        let mut db = open_database(path, opts)?;
        let mut upgraded = None;
        if let Some(found) = upgrade::recorded_version(&db)? {
            if upgrade::check_version(path, found)? {
                // The copy is taken of the closed file: nothing of this process is in
                // flight, so it is the file exactly as the older release left it.
                drop(db);
                let backup = upgrade::make_backup(path, found)?;
                db = open_database(path, opts)?;
                let report = upgrade::run(&db, found, backup, Timestamp::now())?;
                tracing::warn!(
                    from = report.from,
                    to = report.to,
                    backup = %report.backup.display(),
                    repaired = report.notes.len(),
                    "upgraded the database to the current format; the file as it was is kept as the backup"
                );
                for note in &report.notes {
                    tracing::warn!("upgrade: {note}");
                }
                upgraded = Some(report);
            }
        }
        init_tables(&db)?;
        let slot = Arc::new(health::DbSlot::new(db, path, opts));
        let (tx, rx) = mpsc::channel::<Msg>();
        let wslot = slot.clone();
        let (wpath, cache) = (path.to_owned(), opts.cache_bytes);
        let thread = std::thread::Builder::new()
            .name("store-writer".into())
            .spawn(move || writer_loop(&wslot, &wpath, cache, rx))
            .map_err(|e| StoreError::Storage(format!("cannot start the writer thread: {e}")))?;
        Ok(Store {
            inner: Arc::new(Inner {
                slot,
                path: path.to_owned(),
                writer: Mutex::new(Some(tx)),
                thread: Mutex::new(Some(thread)),
                tokens: Mutex::new(tokens::TokenCache::default()),
                upgraded,
            }),
        })
    }

    /// The format upgrade this open performed, if any.
    pub(crate) fn upgraded(&self) -> Option<&Upgrade> {
        self.inner.upgraded.as_ref()
    }

    /// Stops the writer after the jobs already queued and waits for it.
    pub(crate) fn close(&self) {
        if let Ok(mut w) = self.inner.writer.lock() {
            w.take();
        }
        let handle = self.inner.thread.lock().ok().and_then(|mut t| t.take());
        if let Some(h) = handle {
            let _ = h.join();
        }
    }

    fn submit<T: Send + 'static>(
        &self,
        kind: Kind,
        f: impl for<'a, 't> FnOnce(&'a mut WriteTables<'t>) -> StoreResult<T> + Send + 'static,
    ) -> StoreResult<tokio::sync::oneshot::Receiver<AnyResult>> {
        let (reply, rx) = tokio::sync::oneshot::channel();
        let job = Job {
            run: Box::new(move |t| f(t).map(|v| Box::new(v) as Box<dyn Any + Send>)),
            reply,
            kind,
        };
        self.send(Msg::Write(job))?;
        Ok(rx)
    }

    fn send(&self, msg: Msg) -> StoreResult<()> {
        let guard = self.inner.writer.lock().map_err(|_| StoreError::Closed)?;
        let sender = guard.as_ref().ok_or(StoreError::Closed)?;
        sender.send(msg).map_err(|_| StoreError::Closed)
    }

    /// The database as it is now (the file may be rewritten between two calls).
    fn db(&self) -> StoreResult<Arc<Database>> {
        self.inner.slot.get()
    }

    /// Storage failures seen since start and whether the disk is full now.
    pub(crate) fn health(&self) -> StorageHealth {
        self.inner.slot.health()
    }

    /// Rewrites the whole database into a fresh file (`<file>.rewrite`, 0600),
    /// applies `edit` to the copy, and renames it over the database file; the store
    /// goes on with the new file, readers holding a snapshot finish on the old one.
    /// Runs on the writer thread between two commits, so no write is lost or split.
    /// redb reuses freed pages but never overwrites them, so this is the way to make
    /// bytes that a write removed (the push target's token after cut-over, issue 11)
    /// disappear from the file. On failure the old file stays in use unchanged.
    pub(crate) async fn rewrite_file(
        &self,
        edit: impl FnOnce(&WriteTransaction) -> StoreResult<()> + Send + 'static,
    ) -> StoreResult<()> {
        let (reply, rx) = tokio::sync::oneshot::channel();
        self.send(Msg::Rewrite {
            edit: Box::new(edit),
            reply,
        })?;
        rx.await.map_err(|_| StoreError::Closed)?
    }

    fn unpack<T: 'static>(
        r: Result<AnyResult, tokio::sync::oneshot::error::RecvError>,
    ) -> StoreResult<T> {
        let any = r.map_err(|_| StoreError::Closed)??;
        any.downcast::<T>()
            .map(|b| *b)
            .map_err(|_| StoreError::Storage("writer returned an unexpected type".into()))
    }

    /// Runs `f` in the next group commit and returns its result once durable.
    pub(crate) async fn write<T: Send + 'static>(
        &self,
        f: impl FnOnce(&WriteTransaction) -> StoreResult<T> + Send + 'static,
    ) -> StoreResult<T> {
        self.write_tables(move |t| f(t.txn())).await
    }

    /// `write` through the tables the batch keeps open from one job to the next
    /// ([`WriteTables`]): for the writes every batch is full of (creates).
    async fn write_tables<T: Send + 'static>(
        &self,
        f: impl for<'a, 't> FnOnce(&'a mut WriteTables<'t>) -> StoreResult<T> + Send + 'static,
    ) -> StoreResult<T> {
        let rx = self.submit(Kind::Directory, f)?;
        Self::unpack(rx.await)
    }

    /// `write` for the server's own bookkeeping: the tokens' last use and the traffic
    /// counts flushed every 30 s (`App::flush_token_uses`), the `/readyz` probe's row. Committed and durable like
    /// any write, but a batch holding only such jobs leaves the change count
    /// ([`Store::changes`]) as it was, so the rendered answers of GETs
    /// (`app::answers`) stay valid across it. `f` must write nothing a SCIM answer is
    /// rendered from (resources, memberships, their indexes, `meta`): only the
    /// TOKENS and traffic tables and the probe's SETTINGS row.
    pub(crate) async fn write_bookkeeping<T: Send + 'static>(
        &self,
        f: impl FnOnce(&WriteTransaction) -> StoreResult<T> + Send + 'static,
    ) -> StoreResult<T> {
        let rx = self.submit(Kind::Bookkeeping, move |t| f(t.txn()))?;
        Self::unpack(rx.await)
    }

    /// `write` for callers outside an async runtime (CLI commands).
    pub(crate) fn write_blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&WriteTransaction) -> StoreResult<T> + Send + 'static,
    ) -> StoreResult<T> {
        let rx = self.submit(Kind::Directory, move |t| f(t.txn()))?;
        Self::unpack(rx.blocking_recv())
    }

    /// The store's change count (`health::DbSlot::changes`): read it before taking a
    /// snapshot; while it holds the same value, no write of the directory was
    /// acknowledged since (bookkeeping, `Store::write_bookkeeping`, does not count).
    pub(crate) fn changes(&self) -> u64 {
        self.inner.slot.changes()
    }

    /// A snapshot shared by the reads of one state of the directory: the one begun
    /// first after the change count last moved, or a new one (then shared). A GET by
    /// id takes it instead of beginning its own, so it opens no table and reads no
    /// group another read of the same state opened or read already (issue 10).
    /// Like [`Store::snapshot`], it holds every write acknowledged before the call.
    pub(crate) fn shared_snapshot(&self) -> StoreResult<Arc<Snapshot>> {
        let changes = self.changes();
        if let Some(kept) = self.inner.slot.kept_snapshot(changes) {
            return Ok(kept);
        }
        let fresh = Arc::new(self.snapshot()?);
        self.inner.slot.keep_snapshot(changes, &fresh);
        Ok(fresh)
    }

    /// A consistent read-only view. A handle latched by a write that failed a moment
    /// ago (full disk, I/O error) is given up and the view begun again on the reopened
    /// file, once (health.rs).
    pub(crate) fn snapshot(&self) -> StoreResult<Snapshot> {
        let db = self.db()?;
        match db.begin_read().map_err(StoreError::from) {
            Ok(txn) => Ok(Snapshot::new(txn, db)),
            Err(StoreError::Io(_)) => {
                self.inner.slot.give_up(db);
                let db = self.db()?;
                Ok(Snapshot::new(db.begin_read()?, db))
            }
            Err(e) => Err(e),
        }
    }

    /// Proves the database takes a durable write (for `/readyz`). Bookkeeping: the
    /// probe's row is read by no SCIM answer, so a readiness probe every few seconds
    /// keeps the rendered answers (`Store::write_bookkeeping`).
    pub(crate) async fn check_writable(&self) -> StoreResult<()> {
        self.write_bookkeeping(|txn| {
            txn.open_table(SETTINGS)?
                .insert("ready_probe", [1u8].as_slice())?;
            Ok(())
        })
        .await
    }

    /// Writes a consistent copy of the whole database to `out` (via `out.tmp` and a
    /// rename, so `out` is either the old file or a complete backup). Runs from one
    /// read snapshot; writers are not blocked. Returns (users, groups) copied.
    pub(crate) fn backup_to(&self, out: &Path) -> StoreResult<(u64, u64)> {
        let snapshot = self.snapshot()?;
        // The push target's token never leaves the live database (issue 11).
        let copy = write_copy(
            snapshot.txn(),
            out,
            16 << 20,
            Box::new(migration::drop_target_token),
        )?;
        drop(copy);
        let users = snapshot.count(ResourceType::User)?;
        let groups = snapshot.count(ResourceType::Group)?;
        Ok((users, groups))
    }

    /// Size of the database file in bytes.
    pub(crate) fn file_size(&self) -> u64 {
        std::fs::metadata(&self.inner.path)
            .map(|m| m.len())
            .unwrap_or(0)
    }

    // ---- resource writes -------------------------------------------------------

    /// Creates a resource (a new id, version 1) with a group's `members`. `audit`,
    /// when given, is appended in the same transaction once the resource is written,
    /// with its id and name ([`append_write_audit`]): the write and its audit entry
    /// are durable together or not at all. Returns the resource and its record as
    /// stored ([`Created`]), so the answer can be written from the record's text
    /// without reading it back (issue 10). Errors: 409 uniqueness, 400 for unknown
    /// members (nothing written, no entry).
    pub(crate) async fn create(
        &self,
        rt: ResourceType,
        attrs: Attributes,
        members: Vec<MemberRef>,
        actor: Actor,
        now: Timestamp,
        audit: Option<AuditOnWrite>,
    ) -> StoreResult<Created> {
        let durable = audit.as_ref().map(|a| a.durable);
        let (created, entry) = self
            .write_tables(move |t| {
                let created = create_with(t, rt, attrs, members, &actor, now)?;
                let r = &created.resource;
                let name = identifying_name(rt, &r.attrs);
                let entry = append_write_audit(t, audit, &r.id, name)?;
                Ok((created, entry))
            })
            .await?;
        announce(durable, entry);
        Ok(created)
    }

    /// Reads the current resource inside the writer's transaction, lets `f` compute
    /// the change and writes it: PUT and PATCH both go through here, so concurrent
    /// updates of one resource cannot lose each other. `req.audit` is appended in the
    /// same transaction (with the name the resource had before) when the update
    /// succeeds. Errors: 404 `Scim` when the resource does not exist, 412 when
    /// `if_match` does not match, whatever `f` refuses, 409 uniqueness, 400 for
    /// unknown members.
    pub(crate) async fn update(
        &self,
        mut req: UpdateRequest,
        f: impl FnOnce(StoredResource) -> Result<Update, ScimError> + Send + 'static,
    ) -> StoreResult<StoredResource> {
        let audit = req.audit.take();
        let durable = audit.as_ref().map(|a| a.durable);
        let (r, entry) = self
            .write(move |txn| {
                let (rt, id) = (req.target.rt, req.target.id.as_str());
                let name = name_before(txn, audit.is_some(), rt, id)?;
                let r = update_in(txn, &req, f)?;
                let entry = append_write_audit(&mut WriteTables::new(txn), audit, id, name)?;
                Ok((r, entry))
            })
            .await?;
        announce(durable, entry);
        Ok(r)
    }

    /// Deletes a resource, its index entries and its memberships in both directions
    /// (each group it leaves gets a new version and an `update` event); `audit` as
    /// for [`Store::update`]. A deleted user's reports lose it as their manager, each
    /// with an audit entry of its own (`reports::MANAGER_REMOVED`, by the delete's
    /// actor) and named in the note of the delete's entry, all in the delete's
    /// transaction. Returns those report entries (logged through `audit.durable`
    /// when there is an `audit`; the caller logs them otherwise).
    pub(crate) async fn delete(
        &self,
        target: Target,
        actor: Actor,
        now: Timestamp,
        mut audit: Option<AuditOnWrite>,
    ) -> StoreResult<Vec<AuditRecord>> {
        let durable = audit.as_ref().map(|a| a.durable);
        let (entry, reports) = self
            .write(move |txn| {
                let (rt, id) = (target.rt, target.id.as_str());
                let wanted = audit.is_some() || rt == ResourceType::User;
                let name = name_before(txn, wanted, rt, id)?;
                let cleared = delete_reporting(txn, &target, &actor, now)?;
                if cleared.is_empty() {
                    let entry = append_write_audit(&mut WriteTables::new(txn), audit, id, name)?;
                    return Ok((entry, Vec::new()));
                }
                if let Some(a) = audit.as_mut() {
                    a.record.reason = Some(reports::delete_note(&cleared));
                }
                let mut tables = WriteTables::new(txn);
                let entry = append_write_audit(&mut tables, audit, id, name.clone())?;
                let manager = (id, name.as_deref());
                let mut reports =
                    reports::removed_entries(entry.as_ref(), &actor, now, manager, &cleared);
                audit::append_to(tables.audit()?, &mut reports)?;
                Ok((entry, reports))
            })
            .await?;
        announce(durable, entry);
        for r in &reports {
            announce(durable, Some(r.clone()));
        }
        Ok(reports)
    }
}

/// A resource just created: as stored, and the bytes of its record (a
/// [`RawResource`] row).
pub(crate) struct Created {
    pub resource: StoredResource,
    record: Vec<u8>,
}

impl Created {
    /// The record as text ([`RawResource::text`]), borrowed from it.
    pub(crate) fn text(&self) -> StoreResult<StoredText<'_>> {
        RawResource(&self.record).text()
    }
}

/// The audit entry of a resource write (`Store::create`, `update`, `delete`),
/// appended in the write's own transaction when the write succeeds, so that an
/// acknowledged write always has its entry (issue 10: they were two group-commit
/// jobs, and a crash between the two commits lost the entry).
#[derive(Debug, Clone)]
pub(crate) struct AuditOnWrite {
    /// The entry; its `resource_id` and `resource_name` are filled in by the store.
    pub record: AuditRecord,
    /// Called with the entry as stored once the commit holding it is durable (the
    /// application writes it to the log).
    pub durable: fn(&AuditRecord),
}

/// Calls `durable` with the stored entry, after the commit.
fn announce(durable: Option<fn(&AuditRecord)>, entry: Option<AuditRecord>) {
    if let (Some(durable), Some(entry)) = (durable, entry) {
        durable(&entry);
    }
}

/// The resource's name before a write changes it, when an audit entry needs it.
fn name_before(
    txn: &WriteTransaction,
    wanted: bool,
    rt: ResourceType,
    id: &str,
) -> StoreResult<Option<String>> {
    if !wanted {
        return Ok(None);
    }
    name_in(&txn.open_table(table(rt))?, rt, id)
}

/// Appends `audit` (if any) with the resource's `id` and `name`; returns it as
/// stored.
fn append_write_audit(
    t: &mut WriteTables<'_>,
    audit: Option<AuditOnWrite>,
    id: &str,
    name: Option<String>,
) -> StoreResult<Option<AuditRecord>> {
    let Some(AuditOnWrite { mut record, .. }) = audit else {
        return Ok(None);
    };
    record.resource_id = Some(id.to_owned());
    record.resource_name = name;
    audit::append_to(t.audit()?, std::slice::from_mut(&mut record))?;
    Ok(Some(record))
}

/// The name that identifies a resource to people: a user's `userName`, a group's
/// `displayName` (what audit entries show, `Snapshot::name_of`).
fn identifying_name(rt: ResourceType, attrs: &Attributes) -> Option<String> {
    let key = match rt {
        ResourceType::User => "userName",
        ResourceType::Group => "displayName",
    };
    attrs.get(key).and_then(Value::as_str).map(str::to_owned)
}

/// [`identifying_name`] of a stored resource in `t` (its type's table), read
/// without parsing the rest of its record; `None` when it does not exist.
fn name_in(
    t: &impl ReadableTable<&'static str, &'static [u8]>,
    rt: ResourceType,
    id: &str,
) -> StoreResult<Option<String>> {
    let Some(v) = t.get(id)? else {
        return Ok(None);
    };
    let names = record_names(v.value())?;
    Ok(match rt {
        ResourceType::User => names.user_name,
        ResourceType::Group => names.display_name,
    })
}

/// One record of an import: a resource as exported, or a membership.
#[derive(Debug, Clone)]
pub(crate) enum ImportItem {
    Resource(ResourceType, StoredResource),
    Membership {
        group: String,
        member: String,
        rt: ResourceType,
        display: Option<String>,
    },
}

impl Store {
    /// True when the directory holds no users and no groups.
    pub(crate) fn is_empty(&self) -> StoreResult<bool> {
        let s = self.snapshot()?;
        Ok(s.count(ResourceType::User)? == 0 && s.count(ResourceType::Group)? == 0)
    }

    /// Imports records in one durable transaction: `feed` calls `sink` with batches;
    /// any error rolls back everything. Constant memory whatever the size. Returns one
    /// note per record it had to repair (see [`repair_primaries`] and
    /// [`index_keeping_first`]).
    pub(crate) fn import_blocking(
        &self,
        actor: Actor,
        now: Timestamp,
        feed: impl FnOnce(&mut dyn FnMut(Vec<ImportItem>) -> StoreResult<()>) -> Result<(), String>
            + Send
            + 'static,
    ) -> StoreResult<Vec<String>> {
        self.write_blocking(move |txn| {
            let mut notes = Vec::new();
            let mut sink = |batch: Vec<ImportItem>| import_batch(txn, batch, now, &mut notes);
            feed(&mut sink).map_err(StoreError::Aborted)?;
            append_event(txn, &actor, now, EventOp::Import, ResourceType::User, "*")?;
            Ok(notes)
        })
    }
}

/// Writes exported records as they were (ids, meta, attributes), maintaining every
/// index. Resources must come before the memberships that name them. What an older
/// export holds that the current rules forbid is repaired and noted, not refused.
fn import_batch(
    txn: &WriteTransaction,
    items: Vec<ImportItem>,
    now: Timestamp,
    notes: &mut Vec<String>,
) -> StoreResult<()> {
    let batch: HashSet<(ResourceType, &str)> = items
        .iter()
        .filter_map(|i| match i {
            ImportItem::Resource(rt, r) => Some((*rt, r.id.as_str())),
            ImportItem::Membership { .. } => None,
        })
        .collect();
    for item in &items {
        match item {
            ImportItem::Resource(rt, r) => {
                if exists_in(txn, *rt, &r.id)? {
                    return Err(ScimError::uniqueness(format!(
                        "{} {} already exists",
                        rt.name(),
                        r.id
                    ))
                    .into());
                }
            }
            ImportItem::Membership {
                group, member, rt, ..
            } => {
                let pending = |id: &str, want: ResourceType| batch.contains(&(want, id));
                if !(exists_in(txn, ResourceType::Group, group)?
                    || pending(group, ResourceType::Group))
                    || !(exists_in(txn, *rt, member)? || pending(member, *rt))
                {
                    return Err(ScimError::invalid_value(format!(
                        "the membership {group} → {member} names a resource that is not in the directory"
                    ))
                    .into());
                }
            }
        }
    }
    drop(batch);
    for item in items {
        match item {
            ImportItem::Resource(rt, mut r) => {
                repair_primaries(rt, &mut r, now, notes);
                insert_new_in(&mut WriteTables::new(txn), rt, &r)?;
                index_keeping_first(txn, rt, &r, notes)?;
            }
            ImportItem::Membership {
                group,
                member,
                rt,
                display,
            } => add_member(txn, &group, &member, rt, display.as_deref())?,
        }
    }
    Ok(())
}

/// Format 1 stored multi-valued attributes with several `primary: true` as sent;
/// RFC 7643 §2.4 allows one. Keeps the first, bumps the version (the representation
/// changed) and notes it.
fn repair_primaries(
    rt: ResourceType,
    r: &mut StoredResource,
    now: Timestamp,
    notes: &mut Vec<String>,
) -> bool {
    let demoted = crate::scim::resource::demote_extra_primaries(rt, &mut r.attrs);
    if demoted.is_empty() {
        return false;
    }
    notes.push(format!(
        "{} {}: more than one primary value in {}; the first stays primary",
        rt.name(),
        r.id,
        demoted.join(", ")
    ));
    r.meta.version += 1;
    r.meta.last_modified = now.to_rfc3339();
    true
}

/// Writes the index entries of a resource that is new to the indexes (import,
/// upgrade). Two userNames that older releases kept apart but that are one name
/// under the caseless rule keep the first user in the index; the note names both
/// so that the admin can rename one (until then, a write that keeps the second
/// user's name answers 409).
fn index_keeping_first(
    txn: &WriteTransaction,
    rt: ResourceType,
    r: &StoredResource,
    notes: &mut Vec<String>,
) -> StoreResult<()> {
    let mut keys = index_keys(rt, &r.attrs);
    if let Some(name) = keys.user_name.take() {
        let owner = txn
            .open_table(USER_NAMES)?
            .get(name.as_str())?
            .map(|v| v.value().to_owned());
        match owner {
            Some(kept) => {
                let shown = r
                    .attrs
                    .get("userName")
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                notes.push(format!(
                    "User {}: the userName \"{shown}\" is the same name as user {kept}'s once \
                     case and Unicode form are ignored; {kept} keeps it. Rename one of them in \
                     your identity provider",
                    r.id
                ));
            }
            None => keys.user_name = Some(name),
        }
    }
    write_index(
        &mut WriteTables::new(txn),
        rt,
        &r.id,
        &IndexKeys::default(),
        &keys,
    )
}

/// A consistent copy of `src` in a new 0600 redb file written as `out.tmp`, with
/// `edit` applied, made durable and renamed to `out` (so `out` is either what it
/// was or a complete copy). Returns the copy, still open (the rename keeps it
/// valid): the rewrite goes on with it.
fn write_copy(
    src: &ReadTransaction,
    out: &Path,
    cache_bytes: usize,
    edit: CopyEdit,
) -> StoreResult<Database> {
    let tmp = out.with_extension("tmp");
    let _ = std::fs::remove_file(&tmp);
    // 0600 whatever the umask: a copy holds token hashes and the admin's password
    // hash.
    crate::localfs::create_private(&tmp)
        .map_err(|e| StoreError::Storage(format!("cannot create {}: {e}", tmp.display())))?;
    let written = (|| -> StoreResult<Database> {
        let dst = redb::Builder::new()
            .set_cache_size(cache_bytes)
            .create(&tmp)
            .map_err(|e| StoreError::Storage(format!("cannot create {}: {e}", tmp.display())))?;
        let txn = dst.begin_write()?;
        for table in tables::ALL {
            table.copy(src, &txn).map_err(|e| {
                StoreError::Storage(format!("copying the table {}: {e}", table.name()))
            })?;
        }
        edit(&txn)?;
        txn.commit()?;
        std::fs::File::open(&tmp)
            .and_then(|f| f.sync_all())
            .and_then(|_| std::fs::rename(&tmp, out))
            .map_err(|e| StoreError::Storage(format!("cannot write {}: {e}", out.display())))?;
        Ok(dst)
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    let dst = written?;
    // The rename itself made durable.
    if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| StoreError::Storage(format!("cannot sync {}: {e}", dir.display())))?;
    }
    Ok(dst)
}

fn writer_loop(slot: &health::DbSlot, path: &Path, cache_bytes: usize, rx: mpsc::Receiver<Msg>) {
    while let Ok(first) = rx.recv() {
        let mut batch = Vec::new();
        let mut rewrite = None;
        let mut next = Some(first);
        while let Some(msg) = next.take() {
            match msg {
                Msg::Write(job) => batch.push(job),
                // Jobs sent after it wait for it.
                Msg::Rewrite { edit, reply } => {
                    rewrite = Some((edit, reply));
                    break;
                }
            }
            if batch.len() < MAX_BATCH {
                next = rx.try_recv().ok();
            }
        }
        if !batch.is_empty() {
            // While the disk is full, batches are refused without touching the
            // file until the back-off ends (health.rs).
            match slot.check_backoff().and_then(|()| slot.ensure_open()) {
                Ok(current) => commit_batch(slot, current, batch),
                Err(err) => {
                    for job in batch {
                        let _ = job.reply.send(Err(err.clone()));
                    }
                }
            }
        }
        if let Some((edit, reply)) = rewrite {
            let result = slot
                .get()
                .and_then(|current| current.begin_read().map_err(StoreError::from))
                .and_then(|src| write_copy(&src, path, cache_bytes, edit));
            let _ = reply.send(result.and_then(|fresh| slot.replace(fresh)));
        }
    }
}

/// Runs `batch` in one write transaction and commits it once; each job is answered
/// after the commit (or with the error that rolled the batch back). After a full
/// disk or an I/O error the database is reopened before anyone is answered
/// (`health::DbSlot::failed`), so that a client that reads right after its refused
/// write finds the store readable.
fn commit_batch(slot: &health::DbSlot, db: Arc<Database>, batch: Vec<Job>) {
    let txn = match db.begin_write() {
        Ok(t) => t,
        Err(e) => {
            let err = StoreError::from(e);
            slot.failed(db, &err);
            for job in batch {
                let _ = job.reply.send(Err(err.clone()));
            }
            return;
        }
    };
    let mut done = Vec::with_capacity(batch.len());
    let mut fatal: Option<StoreError> = None;
    // One directory write in the batch makes the whole commit a change.
    let changes_directory = batch.iter().any(|job| job.kind == Kind::Directory);
    let mut tables = WriteTables::new(&txn);
    for job in batch {
        if fatal.is_some() {
            done.push((job.reply, Err(StoreError::Closed)));
            continue;
        }
        // A bug in one job must not take the writer (and every later write) down:
        // a panic fails this batch like a storage error and the thread goes on.
        let run = job.run;
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run(&mut tables)))
            .unwrap_or_else(|_| {
                Err(StoreError::Storage(
                    "a write operation panicked; the batch was rolled back".into(),
                ))
            });
        if let Err(e) = &r {
            if !matches!(e, StoreError::Scim(_)) {
                fatal = Some(e.clone());
            }
        }
        done.push((job.reply, r));
    }
    // Every table is closed before the commit (or the rollback).
    drop(tables);
    if let Some(err) = fatal {
        tracing::error!(error = %err, "storage error; the batch is rolled back");
        drop(txn);
        slot.failed(db, &err);
        for (reply, _) in done {
            let _ = reply.send(Err(err.clone()));
        }
        return;
    }
    let (writes, started) = (done.len(), std::time::Instant::now());
    match txn.commit() {
        Ok(()) => {
            slot.committed(writes, started.elapsed(), changes_directory);
            // The handle is given back before anyone is answered, so that a reopen
            // right after (a reader recovering, a backup) does not find it held.
            drop(db);
            for (reply, r) in done {
                let _ = reply.send(r);
            }
        }
        Err(e) => {
            let err = StoreError::from(e);
            tracing::error!(error = %err, "commit failed; the batch is rolled back");
            slot.failed(db, &err);
            for (reply, _) in done {
                let _ = reply.send(Err(err.clone()));
            }
        }
    }
}

/// Creates the tables of a new database and records its format; an existing one is
/// already at [`FORMAT_VERSION`] (checked and upgraded by `Store::open`).
fn init_tables(db: &Database) -> StoreResult<()> {
    let txn = db.begin_write()?;
    {
        let mut settings = txn.open_table(SETTINGS)?;
        if settings.get(FORMAT_KEY)?.is_none() {
            settings.insert(FORMAT_KEY, FORMAT_VERSION.to_le_bytes().as_slice())?;
        }
    }
    for table in tables::ALL {
        table.create(&txn)?;
    }
    txn.commit()?;
    Ok(())
}

// ---- index keys ------------------------------------------------------------------

/// The index entries a resource's attributes produce. Keys of case-insensitive
/// attributes are their caseless form (`scim::text::caseless`), the form the
/// filter evaluator compares, so `userName eq` by index and by scan agree.
#[derive(Default, PartialEq)]
struct IndexKeys {
    user_name: Option<String>,
    external_id: Option<String>,
    group_name: Option<String>,
    /// Distinct, in order of appearance.
    emails: Vec<String>,
}

fn index_keys(rt: ResourceType, attrs: &Attributes) -> IndexKeys {
    let s = |k: &str| attrs.get(k).and_then(Value::as_str);
    let mut keys = IndexKeys {
        external_id: s("externalId").map(str::to_owned),
        ..Default::default()
    };
    match rt {
        ResourceType::User => {
            keys.user_name = s("userName").map(|u| caseless(u).into_owned());
            if let Some(Value::Array(emails)) = attrs.get("emails") {
                let mut seen = HashSet::with_capacity(emails.len());
                for e in emails {
                    if let Some(v) = e.get("value").and_then(Value::as_str) {
                        let v = caseless(v).into_owned();
                        if seen.insert(v.clone()) {
                            keys.emails.push(v);
                        }
                    }
                }
            }
        }
        ResourceType::Group => keys.group_name = s("displayName").map(|n| caseless(n).into_owned()),
    }
    keys
}

/// Refuses (409 `uniqueness`, RFC 7644 §3.3) a userName that another user holds,
/// compared by `keys` (case-folded, NFC); the message names the value `attrs` sends and
/// the stored user's own userName and id, which may differ from it in case or form.
fn check_unique(
    t: &mut WriteTables<'_>,
    rt: ResourceType,
    id: &str,
    attrs: &Attributes,
    keys: &IndexKeys,
) -> StoreResult<()> {
    if rt == ResourceType::User {
        if let Some(name) = &keys.user_name {
            let owner = t
                .user_names()?
                .get(name.as_str())?
                .map(|v| v.value().to_owned());
            if let Some(owner) = owner.filter(|o| o != id) {
                let sent = attrs
                    .get("userName")
                    .and_then(Value::as_str)
                    .unwrap_or(name);
                let stored = name_in(t.records(rt)?, rt, &owner)?;
                let held = stored.as_deref().unwrap_or(name);
                return Err(ScimError::uniqueness(format!(
                    "the userName \"{sent}\" is taken: the user \"{held}\" (id {owner}) already \
                     exists, and userNames are compared ignoring case and Unicode \
                     normalization form"
                ))
                .into());
            }
        }
    }
    Ok(())
}

fn write_index(
    t: &mut WriteTables<'_>,
    rt: ResourceType,
    id: &str,
    old: &IndexKeys,
    new: &IndexKeys,
) -> StoreResult<()> {
    if old == new {
        return Ok(());
    }
    if old.user_name != new.user_name {
        let t = t.user_names()?;
        if let Some(k) = &old.user_name {
            t.remove(k.as_str())?;
        }
        if let Some(k) = &new.user_name {
            t.insert(k.as_str(), id)?;
        }
    }
    if old.external_id != new.external_id {
        let t = t.external_ids()?;
        if let Some(k) = &old.external_id {
            t.remove((rt_code(rt), k.as_str()), id)?;
        }
        if let Some(k) = &new.external_id {
            t.insert((rt_code(rt), k.as_str()), id)?;
        }
    }
    if old.group_name != new.group_name {
        let t = t.group_names()?;
        if let Some(k) = &old.group_name {
            t.remove(k.as_str(), id)?;
        }
        if let Some(k) = &new.group_name {
            t.insert(k.as_str(), id)?;
        }
    }
    if old.emails != new.emails {
        let t = t.emails()?;
        let (old_set, new_set): (HashSet<&String>, HashSet<&String>) =
            (old.emails.iter().collect(), new.emails.iter().collect());
        for k in old.emails.iter().filter(|k| !new_set.contains(k)) {
            t.remove(k.as_str(), id)?;
        }
        for k in new.emails.iter().filter(|k| !old_set.contains(k)) {
            t.insert(k.as_str(), id)?;
        }
    }
    Ok(())
}

// ---- write operations (check first, then write) ------------------------------------

fn get_in(
    txn: &WriteTransaction,
    rt: ResourceType,
    id: &str,
) -> StoreResult<Option<StoredResource>> {
    let t = txn.open_table(table(rt))?;
    let r = match t.get(id)? {
        Some(v) => Some(serde_json::from_slice(v.value())?),
        None => None,
    };
    Ok(r)
}

/// Stores a resource that is not in the directory yet (create, import): its record,
/// its id in the type's id table and a user's manager link (`reports.rs`). Returns
/// the record's bytes.
fn insert_new_in(
    t: &mut WriteTables<'_>,
    rt: ResourceType,
    r: &StoredResource,
) -> StoreResult<Vec<u8>> {
    let record = put_to(t.records(rt)?, r)?;
    t.ids(rt)?.insert(r.id.as_str(), ())?;
    if reports::manager_of(&r.attrs).is_some() {
        reports::follow(t.txn(), &r.id, None, Some(&r.attrs))?;
    }
    Ok(record)
}

/// Writes a resource's record; returns its bytes.
fn put_in(txn: &WriteTransaction, rt: ResourceType, r: &StoredResource) -> StoreResult<Vec<u8>> {
    put_to(&mut txn.open_table(table(rt))?, r)
}

/// [`put_in`] into its type's table `t`, open.
fn put_to(
    t: &mut redb::Table<'_, &'static str, &'static [u8]>,
    r: &StoredResource,
) -> StoreResult<Vec<u8>> {
    let bytes = serde_json::to_vec(r)?;
    t.insert(r.id.as_str(), bytes.as_slice())?;
    Ok(bytes)
}

fn append_event(
    txn: &WriteTransaction,
    actor: &Actor,
    now: Timestamp,
    op: EventOp,
    rt: ResourceType,
    id: &str,
) -> StoreResult<()> {
    append_event_to(&mut txn.open_table(EVENTS)?, actor, now, op, rt, id)
}

/// [`append_event`] into the events table `t`, open.
fn append_event_to(
    t: &mut redb::Table<'_, u64, &'static [u8]>,
    actor: &Actor,
    now: Timestamp,
    op: EventOp,
    rt: ResourceType,
    id: &str,
) -> StoreResult<()> {
    let seq = t.last()?.map(|(k, _)| k.value() + 1).unwrap_or(1);
    let ev = Event {
        seq,
        time: now,
        actor: actor.clone(),
        op,
        resource_type: rt,
        id: id.to_owned(),
    };
    t.insert(seq, serde_json::to_vec(&ev)?.as_slice())?;
    Ok(())
}

/// Most change events one pruning commit deletes (the next run continues).
const PRUNE_BATCH: usize = 10_000;

impl Store {
    /// Deletes the oldest change events that are older than `max_age` (before
    /// `now`) or beyond the newest `max_count` — never the newest one (sequence
    /// numbers continue from it) and never one the migration mirror has yet to send
    /// (after `mirror_from` while a push or mirror runs). At most `PRUNE_BATCH` per
    /// call, in one commit. Returns how many were deleted (issue 11: the table grew
    /// without bound over years of syncs).
    pub(crate) async fn prune_events(
        &self,
        now: Timestamp,
        max_age: std::time::Duration,
        max_count: u64,
    ) -> StoreResult<u64> {
        self.write(move |txn| {
            let state = {
                let t = txn.open_table(SETTINGS)?;
                let bytes = t.get("migration")?.map(|v| v.value().to_vec());
                match bytes {
                    Some(b) => serde_json::from_slice::<MigrationState>(&b)?,
                    None => MigrationState::default(),
                }
            };
            let unsent_from = match state.phase {
                Phase::Pushing | Phase::Mirroring | Phase::Verified => state.mirror_from + 1,
                _ => u64::MAX,
            };
            let back = i64::try_from(max_age.as_secs()).unwrap_or(i64::MAX);
            let cutoff = now.checked_add(time::Duration::seconds(-back));
            let mut t = txn.open_table(EVENTS)?;
            let Some(last) = t.last()?.map(|(k, _)| k.value()) else {
                return Ok(0);
            };
            let over = t.len()?.saturating_sub(max_count);
            let mut doomed = Vec::new();
            for row in t.iter()?.take(PRUNE_BATCH) {
                let (k, v) = row?;
                let seq = k.value();
                if seq >= last || seq >= unsent_from {
                    break;
                }
                let too_many = (doomed.len() as u64) < over;
                let too_old = serde_json::from_slice::<Event>(v.value())
                    .map(|e| cutoff.is_some_and(|c| e.time < c))
                    .unwrap_or(true);
                if !(too_many || too_old) {
                    break;
                }
                doomed.push(seq);
            }
            for seq in &doomed {
                t.remove(seq)?;
            }
            Ok(doomed.len() as u64)
        })
        .await
    }
}

fn exists_in(txn: &WriteTransaction, rt: ResourceType, id: &str) -> StoreResult<bool> {
    Ok(txn.open_table(table(rt))?.get(id)?.is_some())
}

/// Resolves the type of each member and checks that it exists.
fn resolve_members(
    txn: &WriteTransaction,
    group_id: &str,
    members: Vec<MemberRef>,
) -> StoreResult<Vec<Member>> {
    let mut out: Vec<Member> = Vec::with_capacity(members.len());
    let mut seen: HashSet<String> = HashSet::with_capacity(members.len());
    for m in members {
        if m.id == group_id {
            return Err(ScimError::invalid_value("a group cannot be a member of itself").into());
        }
        let rt = match m.rt {
            Some(rt) if exists_in(txn, rt, &m.id)? => Some(rt),
            Some(_) => None,
            None if exists_in(txn, ResourceType::User, &m.id)? => Some(ResourceType::User),
            None if exists_in(txn, ResourceType::Group, &m.id)? => Some(ResourceType::Group),
            None => None,
        };
        let Some(rt) = rt else {
            return Err(ScimError::invalid_value(format!(
                "the member \"{}\" is not a {} of this directory",
                m.id,
                m.rt.map(|r| r.name()).unwrap_or("User or Group")
            ))
            .into());
        };
        if seen.insert(m.id.clone()) {
            out.push((m.id, rt, m.display));
        }
    }
    Ok(out)
}

/// Writes a membership in both directions. Without a client-given `display` the row
/// keeps the member's own name (read from its record, which must be written already).
fn add_member(
    txn: &WriteTransaction,
    group: &str,
    member: &str,
    rt: ResourceType,
    display: Option<&str>,
) -> StoreResult<()> {
    let own = match display {
        Some(_) => None,
        None => own_name_in(txn, rt, member)?,
    };
    txn.open_table(MEMBERS)?.insert(
        (group, member),
        member_value(rt, display, own.as_deref()).as_slice(),
    )?;
    txn.open_table(MEMBER_OF)?.insert((member, group), ())?;
    Ok(())
}

/// The name a group shows for `id` when no `display` was given ([`shown_name`]),
/// read without building the record's attribute tree.
fn own_name_in(txn: &WriteTransaction, rt: ResourceType, id: &str) -> StoreResult<Option<String>> {
    let t = txn.open_table(table(rt))?;
    let Some(v) = t.get(id)? else {
        return Ok(None);
    };
    own_name(rt, v.value())
}

/// [`shown_name`] of a stored record's bytes: parses the two name attributes only.
fn own_name(rt: ResourceType, record: &[u8]) -> StoreResult<Option<String>> {
    let names = record_names(record)?;
    Ok(match rt {
        ResourceType::User => names.display_name.or(names.user_name),
        ResourceType::Group => names.display_name,
    })
}

/// The `displayName` and `userName` of a stored record (each when a string),
/// parsed without building the record's other attributes.
struct RecordNames {
    display_name: Option<String>,
    user_name: Option<String>,
}

fn record_names(record: &[u8]) -> StoreResult<RecordNames> {
    #[derive(Deserialize)]
    struct Record {
        attrs: Names,
    }
    #[derive(Deserialize)]
    struct Names {
        #[serde(rename = "displayName")]
        display_name: Option<Value>,
        #[serde(rename = "userName")]
        user_name: Option<Value>,
    }
    let r: Record = serde_json::from_slice(record)?;
    let text = |v: Option<Value>| match v {
        Some(Value::String(s)) => Some(s),
        _ => None,
    };
    Ok(RecordNames {
        display_name: text(r.attrs.display_name),
        user_name: text(r.attrs.user_name),
    })
}

/// After `member` was renamed: every group row that shows its own name gets the new
/// one (rows with a client-given `display` keep it), and those groups' versions move.
fn rename_member(
    txn: &WriteTransaction,
    rt: ResourceType,
    member: &str,
    name: Option<&str>,
    now: Timestamp,
) -> StoreResult<()> {
    for group in group_rows(&txn.open_table(MEMBER_OF)?, member)? {
        let mut members = txn.open_table(MEMBERS)?;
        let own = members
            .get((group.as_str(), member))?
            .is_some_and(|v| member_fields(v.value()).1);
        if own {
            members.insert(
                (group.as_str(), member),
                member_value(rt, None, name).as_slice(),
            )?;
        }
        drop(members);
        touch(txn, ResourceType::Group, &group, now)?;
    }
    Ok(())
}

/// Removes a membership; returns the member's type when it was there.
fn remove_member(
    txn: &WriteTransaction,
    group: &str,
    member: &str,
) -> StoreResult<Option<ResourceType>> {
    let removed = txn
        .open_table(MEMBERS)?
        .remove((group, member))?
        .map(|v| parse_member_value(v.value()).0);
    txn.open_table(MEMBER_OF)?.remove((member, group))?;
    Ok(removed)
}

/// The members of a group with their types: a range scan of MEMBERS.
fn member_rows(
    t: &impl ReadableTable<(&'static str, &'static str), &'static [u8]>,
    group: &str,
) -> StoreResult<Vec<Member>> {
    let mut out = Vec::new();
    for row in t.range((group, "")..)? {
        let (k, v) = row?;
        let (g, m) = k.value();
        if g != group {
            break;
        }
        let (rt, display) = parse_member_value(v.value());
        out.push((m.to_owned(), rt, display));
    }
    Ok(out)
}

/// The groups a resource is a direct member of: a range scan of MEMBER_OF.
fn group_rows(
    t: &impl ReadableTable<(&'static str, &'static str), ()>,
    member: &str,
) -> StoreResult<Vec<String>> {
    let mut out = Vec::new();
    for row in t.range((member, "")..)? {
        let (k, _) = row?;
        let (m, g) = k.value();
        if m != member {
            break;
        }
        out.push(g.to_owned());
    }
    Ok(out)
}

#[cfg(test)]
fn create_in(
    txn: &WriteTransaction,
    rt: ResourceType,
    attrs: Attributes,
    members: Vec<MemberRef>,
    actor: &Actor,
    now: Timestamp,
) -> StoreResult<Created> {
    create_with(&mut WriteTables::new(txn), rt, attrs, members, actor, now)
}

/// [`create_in`] through tables that may stay open for the next job of the batch.
/// Only a manager to check or members to resolve and write need the bare
/// transaction (closing the tables held open).
fn create_with(
    t: &mut WriteTables<'_>,
    rt: ResourceType,
    attrs: Attributes,
    members: Vec<MemberRef>,
    actor: &Actor,
    now: Timestamp,
) -> StoreResult<Created> {
    let id = new_id(now);
    let keys = index_keys(rt, &attrs);
    check_unique(t, rt, &id, &attrs, &keys)?;
    let members = if members.is_empty() {
        Vec::new()
    } else if rt == ResourceType::Group {
        resolve_members(t.txn(), &id, members)?
    } else {
        Vec::new()
    };
    if rt == ResourceType::User && reports::manager_of(&attrs).is_some() {
        check_manager(t.txn(), None, &attrs, None)?;
    }
    let created = now.to_rfc3339();
    let r = StoredResource {
        id,
        meta: Meta {
            last_modified: created.clone(),
            created,
            version: 1,
            groups_tag: None,
        },
        attrs,
    };
    let record = insert_new_in(t, rt, &r)?;
    write_index(t, rt, &r.id, &IndexKeys::default(), &keys)?;
    for (m, mrt, display) in &members {
        add_member(t.txn(), &r.id, m, *mrt, display.as_deref())?;
    }
    append_event_to(t.events()?, actor, now, EventOp::Create, rt, &r.id)?;
    Ok(Created {
        resource: r,
        record,
    })
}

fn check_if_match(current: &Meta, if_match: Option<&str>) -> StoreResult<()> {
    let Some(expected) = if_match else {
        return Ok(());
    };
    let etag = current.etag();
    let ok = expected.split(',').map(str::trim).any(|tag| {
        tag == "*" || tag == etag || tag.trim_start_matches("W/") == etag.trim_start_matches("W/")
    });
    if ok {
        Ok(())
    } else {
        Err(ScimError::precondition_failed(format!(
            "the resource has changed: its version is {etag}, the request expected {expected}"
        ))
        .into())
    }
}

/// The resource's meta as its representation has it: a user's version includes its
/// groups' (see `nesting.rs`).
fn representation_meta(
    txn: &WriteTransaction,
    rt: ResourceType,
    r: &StoredResource,
) -> StoreResult<Meta> {
    let mut meta = r.meta.clone();
    if rt == ResourceType::User {
        let tables =
            nesting::Tables::new(txn.open_table(MEMBER_OF)?, || Ok(txn.open_table(GROUPS)?));
        let ms = nesting::memberships(&tables, &r.id)?;
        nesting::derive_user_meta(&mut meta, &ms);
    }
    Ok(meta)
}

/// The name a group shows for a member that has no client-given `display`.
fn shown_name(rt: ResourceType, attrs: &Attributes) -> Option<&str> {
    let s = |k: &str| attrs.get(k).and_then(Value::as_str);
    match rt {
        ResourceType::User => s("displayName").or_else(|| s("userName")),
        ResourceType::Group => s("displayName"),
    }
}

fn update_in(
    txn: &WriteTransaction,
    req: &UpdateRequest,
    f: impl FnOnce(StoredResource) -> Result<Update, ScimError>,
) -> StoreResult<StoredResource> {
    let (rt, id, with_members) = (req.target.rt, req.target.id.as_str(), req.with_members);
    let (actor, now) = (&req.actor, req.now);
    let Some(mut current) = get_in(txn, rt, id)? else {
        return Err(ScimError::not_found(format!("{} {id} not found", rt.name())).into());
    };
    if let Some(if_match) = req.target.if_match.as_deref() {
        check_if_match(&representation_meta(txn, rt, &current)?, Some(if_match))?;
    }
    let old_keys = index_keys(rt, &current.attrs);
    let old_attrs = current.attrs.clone();
    if with_members && rt == ResourceType::Group {
        let members = member_rows(&txn.open_table(MEMBERS)?, id)?;
        let list = members
            .into_iter()
            .map(|(m, mrt, display)| {
                let mut v = serde_json::json!({"value": m, "type": mrt.name()});
                if let Some(d) = display {
                    v["display"] = Value::String(d);
                }
                v
            })
            .collect::<Vec<_>>();
        if !list.is_empty() {
            current.attrs.insert("members".into(), Value::Array(list));
        }
    }
    let meta = current.meta.clone();
    let update = f(current)?;
    let mut attrs = update.attrs;
    attrs.remove("members");
    attrs.remove("groups");
    let new_keys = index_keys(rt, &attrs);
    check_unique(&mut WriteTables::new(txn), rt, id, &attrs, &new_keys)?;
    if rt == ResourceType::User {
        check_manager(txn, Some(id), &attrs, Some(&old_attrs))?;
    }
    // Check the membership change completely before writing anything: what to add
    // (new members, or a new display) and what to remove.
    let (to_add, to_remove) = match update.members {
        MembersChange::Keep => (Vec::new(), Vec::new()),
        MembersChange::Set(list) => {
            let wanted = resolve_members(txn, id, list)?;
            let keep: HashSet<&str> = wanted.iter().map(|(m, _, _)| m.as_str()).collect();
            let removed = member_rows(&txn.open_table(MEMBERS)?, id)?
                .into_iter()
                .map(|(m, _, _)| m)
                .filter(|m| !keep.contains(m.as_str()))
                .collect();
            drop(keep);
            (changed_members(txn, id, wanted)?, removed)
        }
        MembersChange::Delta { add, remove } => {
            let add = resolve_members(txn, id, add)?;
            let members = txn.open_table(MEMBERS)?;
            // Removing a member that is not there is a no-op: IdPs resend removals.
            let mut present = Vec::with_capacity(remove.len());
            for m in remove {
                if members.get((id, m.as_str()))?.is_some() {
                    present.push(m);
                }
            }
            drop(members);
            (changed_members(txn, id, add)?, present)
        }
    };
    cycles::refuse_closing(txn, id, &to_add)?;
    let members_changed = !to_add.is_empty() || !to_remove.is_empty();
    if attrs == old_attrs && !members_changed {
        // Nothing changes: keep the version, so ETags stay valid.
        return Ok(StoredResource {
            id: id.to_owned(),
            meta,
            attrs,
        });
    }
    if rt == ResourceType::Group {
        for m in &to_remove {
            // The former member's own representation changed (a user's `groups`, or
            // the users of a nested group): its version moves, so ETags never go back
            // to what they were before it joined. Its lastModified stays: `groups`
            // is derived, not the member's own data (docs/ARCHITECTURE.md).
            if let Some(mrt) = remove_member(txn, id, m)? {
                bump_version(txn, mrt, m)?;
            }
        }
        for (m, mrt, display) in &to_add {
            add_member(txn, id, m, *mrt, display.as_deref())?;
        }
    }
    // A new name shows in the groups that list this resource as a member.
    let name = shown_name(rt, &attrs);
    if name != shown_name(rt, &old_attrs) {
        rename_member(txn, rt, id, name, now)?;
    }
    let r = StoredResource {
        id: id.to_owned(),
        meta: Meta {
            created: meta.created,
            last_modified: now.to_rfc3339(),
            version: meta.version + 1,
            groups_tag: None,
        },
        attrs,
    };
    put_in(txn, rt, &r)?;
    write_index(&mut WriteTables::new(txn), rt, id, &old_keys, &new_keys)?;
    reports::follow(txn, id, Some(&old_attrs), Some(&r.attrs))?;
    append_event(txn, actor, now, EventOp::Update, rt, id)?;
    Ok(r)
}

/// The members of `wanted` that are not already members with the same display.
fn changed_members(
    txn: &WriteTransaction,
    group: &str,
    wanted: Vec<Member>,
) -> StoreResult<Vec<Member>> {
    let members = txn.open_table(MEMBERS)?;
    let mut out = Vec::with_capacity(wanted.len());
    for a in wanted {
        let current = members
            .get((group, a.0.as_str()))?
            .map(|v| parse_member_value(v.value()).1);
        if current != Some(a.2.clone()) {
            out.push(a);
        }
    }
    Ok(out)
}

/// Bumps a resource's version after what it shows changed as a side effect (a
/// group's members or a member's name, a user's groups). No change event: the
/// resource's own data did not change.
fn touch(txn: &WriteTransaction, rt: ResourceType, id: &str, now: Timestamp) -> StoreResult<()> {
    if let Some(mut r) = get_in(txn, rt, id)? {
        r.meta.version += 1;
        r.meta.last_modified = now.to_rfc3339();
        put_in(txn, rt, &r)?;
    }
    Ok(())
}

/// Bumps a member's version after it left a group (its derived `groups` changed):
/// its ETag moves, its lastModified, the time of its own last change, does not.
fn bump_version(txn: &WriteTransaction, rt: ResourceType, id: &str) -> StoreResult<()> {
    if let Some(mut r) = get_in(txn, rt, id)? {
        r.meta.version += 1;
        put_in(txn, rt, &r)?;
    }
    Ok(())
}

/// Deletes `target` in `txn` (what [`Store::delete`] does, without the audit): the
/// tests' way to delete inside a transaction of their own.
#[cfg(test)]
fn delete_in(
    txn: &WriteTransaction,
    target: &Target,
    actor: &Actor,
    now: Timestamp,
) -> StoreResult<()> {
    delete_reporting(txn, target, actor, now).map(drop)
}

/// Deletes a resource in `txn` (see [`Store::delete`]); returns the users that lost
/// it as their manager.
fn delete_reporting(
    txn: &WriteTransaction,
    target: &Target,
    actor: &Actor,
    now: Timestamp,
) -> StoreResult<Vec<reports::ClearedReport>> {
    let (rt, id) = (target.rt, target.id.as_str());
    let Some(current) = get_in(txn, rt, id)? else {
        return Err(ScimError::not_found(format!("{} {id} not found", rt.name())).into());
    };
    if let Some(if_match) = target.if_match.as_deref() {
        check_if_match(&representation_meta(txn, rt, &current)?, Some(if_match))?;
    }
    txn.open_table(table(rt))?.remove(id)?;
    txn.open_table(id_table(rt))?.remove(id)?;
    write_index(
        &mut WriteTables::new(txn),
        rt,
        id,
        &index_keys(rt, &current.attrs),
        &IndexKeys::default(),
    )?;
    // Memberships where this resource is the member.
    let groups = group_rows(&txn.open_table(MEMBER_OF)?, id)?;
    for group in groups {
        remove_member(txn, &group, id)?;
        touch(txn, ResourceType::Group, &group, now)?;
        // The group changed too; the migration mirror replays it from this event.
        append_event(
            txn,
            actor,
            now,
            EventOp::Update,
            ResourceType::Group,
            &group,
        )?;
    }
    // A group's own members: each loses this group from its `groups` (a nested
    // group's users lose it as an indirect group).
    if rt == ResourceType::Group {
        let members = member_rows(&txn.open_table(MEMBERS)?, id)?;
        for (member, mrt, _) in members {
            remove_member(txn, id, &member)?;
            bump_version(txn, mrt, &member)?;
        }
    }
    // A user's reports lose it as their manager (RFC 7643 §4.3: a reference).
    let cleared = match rt {
        ResourceType::User => reports::on_delete(txn, id, &current.attrs, actor, now)?,
        ResourceType::Group => Vec::new(),
    };
    append_event(txn, actor, now, EventOp::Delete, rt, id)?;
    Ok(cleared)
}

// ---- reads ---------------------------------------------------------------------

/// A consistent, read-only view of the store.
pub(crate) struct Snapshot {
    txn: ReadTransaction,
    /// The database the transaction reads: a read transaction fails once its
    /// database is dropped, and `Store::rewrite_file` replaces the store's.
    _db: Arc<Database>,
    /// The tables a read of a resource uses, each opened once per snapshot (opening
    /// one is a lookup in redb's table tree: ≈ 3,500 instructions, issue 10).
    users: OnceLock<ReadOnlyTable<&'static str, &'static [u8]>>,
    groups: OnceLock<ReadOnlyTable<&'static str, &'static [u8]>>,
    member_of: OnceLock<ReadOnlyTable<(&'static str, &'static str), ()>>,
    /// The groups read through this snapshot (`None`: no such group), at most
    /// [`KEPT_GROUP_NODES`]: users share their groups, and the snapshot never
    /// changes, so each is read and parsed once (issue 10).
    group_nodes: Mutex<HashMap<String, Option<Arc<nesting::GroupNode>>>>,
}

/// Most groups one snapshot keeps ([`Snapshot::group_node`]); beyond it a group is
/// read each time, as before.
const KEPT_GROUP_NODES: usize = 10_000;

/// The table in `cell`, opened from `txn` on first use.
fn opened<'a, K: redb::Key + 'static, V: redb::Value + 'static>(
    txn: &ReadTransaction,
    cell: &'a OnceLock<ReadOnlyTable<K, V>>,
    def: TableDefinition<'static, K, V>,
) -> StoreResult<&'a ReadOnlyTable<K, V>> {
    if let Some(t) = cell.get() {
        return Ok(t);
    }
    let t = txn.open_table(def)?;
    Ok(cell.get_or_init(|| t))
}

impl nesting::GroupSource for Snapshot {
    fn groups_of(&self, member: &str) -> StoreResult<Vec<String>> {
        group_rows(self.member_of_table()?, member)
    }

    fn group(&self, id: &str) -> StoreResult<Option<Arc<nesting::GroupNode>>> {
        if let Some(kept) = self
            .group_nodes
            .lock()
            .ok()
            .and_then(|m| m.get(id).cloned())
        {
            return Ok(kept);
        }
        let node = nesting::read_node(
            self.member_of_table()?,
            self.table_of(ResourceType::Group)?,
            id,
        )?
        .map(Arc::new);
        if let Ok(mut kept) = self.group_nodes.lock() {
            if kept.len() < KEPT_GROUP_NODES {
                kept.insert(id.to_owned(), node.clone());
            }
        }
        Ok(node)
    }
}

impl Snapshot {
    fn new(txn: ReadTransaction, db: Arc<Database>) -> Snapshot {
        Snapshot {
            txn,
            _db: db,
            users: OnceLock::new(),
            groups: OnceLock::new(),
            member_of: OnceLock::new(),
            group_nodes: Mutex::new(HashMap::new()),
        }
    }

    /// USERS or GROUPS, opened once.
    fn table_of(
        &self,
        rt: ResourceType,
    ) -> StoreResult<&ReadOnlyTable<&'static str, &'static [u8]>> {
        match rt {
            ResourceType::User => opened(&self.txn, &self.users, USERS),
            ResourceType::Group => opened(&self.txn, &self.groups, GROUPS),
        }
    }

    /// MEMBER_OF, opened once.
    fn member_of_table(&self) -> StoreResult<&ReadOnlyTable<(&'static str, &'static str), ()>> {
        opened(&self.txn, &self.member_of, MEMBER_OF)
    }

    pub(crate) fn get(&self, rt: ResourceType, id: &str) -> StoreResult<Option<StoredResource>> {
        let t = self.txn.open_table(table(rt))?;
        let r = match t.get(id)? {
            Some(v) => Some(serde_json::from_slice(v.value())?),
            None => None,
        };
        Ok(r)
    }

    /// The name that identifies a resource to people (a user's `userName`, a
    /// group's `displayName`; audit entries show it), read without parsing the
    /// rest of the record. `None` when the resource does not exist or has none.
    pub(crate) fn name_of(&self, rt: ResourceType, id: &str) -> StoreResult<Option<String>> {
        name_in(&self.txn.open_table(table(rt))?, rt, id)
    }

    /// Reads one resource as text ([`StoredText`]: attributes as stored, not parsed
    /// into values) and hands it to `f`, whose result is returned; `None` when it
    /// does not exist.
    pub(crate) fn get_text<T>(
        &self,
        rt: ResourceType,
        id: &str,
        f: impl FnOnce(StoredText<'_>) -> StoreResult<T>,
    ) -> StoreResult<Option<T>> {
        self.get_raw(rt, id, |raw| f(raw.text()?))
    }

    /// Reads one resource's row undecoded ([`RawResource`]) and hands it to `f`,
    /// whose result is returned; `None` when it does not exist.
    pub(crate) fn get_raw<T>(
        &self,
        rt: ResourceType,
        id: &str,
        f: impl FnOnce(RawResource<'_>) -> StoreResult<T>,
    ) -> StoreResult<Option<T>> {
        let Some(v) = self.table_of(rt)?.get(id)? else {
            return Ok(None);
        };
        f(RawResource(v.value())).map(Some)
    }

    /// The groups a user belongs to, directly and through nested groups.
    fn memberships(&self, id: &str) -> StoreResult<Vec<nesting::Membership>> {
        nesting::memberships(self, id)
    }

    /// Gives a resource read from this snapshot the meta its representation has: a
    /// user's version also follows its groups (direct and indirect).
    pub(crate) fn derive_meta(&self, rt: ResourceType, r: &mut StoredResource) -> StoreResult<()> {
        if rt == ResourceType::User {
            let ms = self.memberships(&r.id)?;
            nesting::derive_user_meta(&mut r.meta, &ms);
        }
        Ok(())
    }

    /// [`Snapshot::derive_meta`] of the resource `id` with stored `meta`, and for a
    /// user also its `groups` references when
    /// `user_groups` (None otherwise), from one walk of its groups: what rendering a
    /// user needs, which took up to four walks before (issue 10).
    pub(crate) fn derive_meta_with_groups(
        &self,
        rt: ResourceType,
        id: &str,
        meta: &mut Meta,
        user_groups: bool,
    ) -> StoreResult<Option<Vec<Reference>>> {
        if rt != ResourceType::User {
            return Ok(None);
        }
        let ms = self.memberships(id)?;
        nesting::derive_user_meta(meta, &ms);
        Ok(user_groups.then(|| nesting::references(&ms)))
    }

    /// A group's members (with display names), or the groups a user belongs to,
    /// direct ones first, then indirect ones (RFC 7643 §4.1.2).
    pub(crate) fn references(&self, rt: ResourceType, id: &str) -> StoreResult<Vec<Reference>> {
        match rt {
            ResourceType::Group => {
                let mut out = Vec::new();
                self.visit_members(id, |r| {
                    out.push(r);
                    true
                })?;
                Ok(out)
            }
            ResourceType::User => Ok(nesting::references(&self.memberships(id)?)),
        }
    }

    /// Calls `f` with each direct member of `group` in member-id order, with the name
    /// the group shows for it, until `f` returns false. Reads membership rows only
    /// (the names are kept in them), so a 100,000-member group costs one range scan.
    pub(crate) fn visit_members(
        &self,
        group: &str,
        mut f: impl FnMut(Reference) -> bool,
    ) -> StoreResult<()> {
        self.visit_member_texts(group, |r| {
            f(Reference {
                id: r.id.to_owned(),
                rt: r.rt,
                display: r.display.map(str::to_owned),
                indirect: false,
            })
        })
    }

    /// [`Snapshot::visit_members`] with each member borrowed from its row: no
    /// allocation per member unless its stored name is not UTF-8 (then shown
    /// lossily, as `visit_members` does). For writing a large group's members as
    /// text (issue 10).
    pub(crate) fn visit_member_texts(
        &self,
        group: &str,
        mut f: impl FnMut(&ReferenceText<'_>) -> bool,
    ) -> StoreResult<()> {
        let t = self.txn.open_table(MEMBERS)?;
        for row in t.range((group, "")..)? {
            let (k, v) = row?;
            let (g, m) = k.value();
            if g != group {
                break;
            }
            let (rt, _, name) = member_fields(v.value());
            let display = name.map(String::from_utf8_lossy);
            let r = ReferenceText {
                id: m,
                rt,
                display: display.as_deref(),
                indirect: false,
            };
            if !f(&r) {
                break;
            }
        }
        Ok(())
    }

    /// How many direct members `group` has: one range scan of membership keys,
    /// never a member's value (≈ milliseconds for 100,000 members).
    pub(crate) fn member_count(&self, group: &str) -> StoreResult<u64> {
        let t = self.txn.open_table(MEMBERS)?;
        let mut n = 0u64;
        for row in t.range((group, "")..)? {
            let (k, _) = row?;
            if k.value().0 != group {
                break;
            }
            n += 1;
        }
        Ok(n)
    }

    /// At most `limit` direct members of `group` after skipping the first `skip`, in
    /// member-id order, with the names the group shows for them (as `references`):
    /// the admin page's members table, one page at a time, whatever the group's size.
    pub(crate) fn members_page(
        &self,
        group: &str,
        skip: u64,
        limit: usize,
    ) -> StoreResult<Vec<Reference>> {
        let mut out = Vec::with_capacity(limit.min(1024));
        let mut seen = 0u64;
        self.visit_members(group, |r| {
            if out.len() >= limit {
                return false;
            }
            seen += 1;
            if seen > skip {
                out.push(r);
            }
            true
        })?;
        Ok(out)
    }

    /// Whether the group `group` has more than `n` direct members; reads at most
    /// `n + 1` membership keys, never a member's value.
    pub(crate) fn has_more_members_than(&self, group: &str, n: usize) -> StoreResult<bool> {
        let t = self.txn.open_table(MEMBERS)?;
        let mut seen = 0usize;
        for row in t.range((group, "")..)? {
            let (k, _) = row?;
            if k.value().0 != group {
                break;
            }
            seen += 1;
            if seen > n {
                return Ok(true);
            }
        }
        Ok(false)
    }

    pub(crate) fn is_member(&self, group: &str, member: &str) -> StoreResult<bool> {
        Ok(self
            .txn
            .open_table(MEMBERS)?
            .get((group, member))?
            .is_some())
    }

    pub(crate) fn find_by_user_name(&self, user_name: &str) -> StoreResult<Option<String>> {
        let t = self.txn.open_table(USER_NAMES)?;
        let r = t
            .get(caseless(user_name).as_ref())?
            .map(|v| v.value().to_owned());
        Ok(r)
    }

    pub(crate) fn find_by_external_id(
        &self,
        rt: ResourceType,
        external_id: &str,
    ) -> StoreResult<Vec<String>> {
        let t = self.txn.open_multimap_table(EXTERNAL_IDS)?;
        let mut out = Vec::new();
        for v in t.get((rt_code(rt), external_id))? {
            out.push(v?.value().to_owned());
        }
        Ok(out)
    }

    pub(crate) fn find_groups_by_name(&self, name: &str) -> StoreResult<Vec<String>> {
        let t = self.txn.open_multimap_table(GROUP_NAMES)?;
        let mut out = Vec::new();
        for v in t.get(caseless(name).as_ref())? {
            out.push(v?.value().to_owned());
        }
        Ok(out)
    }

    pub(crate) fn find_users_by_email(&self, email: &str) -> StoreResult<Vec<String>> {
        let t = self.txn.open_multimap_table(EMAILS)?;
        let mut out = Vec::new();
        for v in t.get(caseless(email).as_ref())? {
            out.push(v?.value().to_owned());
        }
        Ok(out)
    }

    pub(crate) fn count(&self, rt: ResourceType) -> StoreResult<u64> {
        Ok(self.txn.open_table(table(rt))?.len()?)
    }

    /// Visits every resource of a type in id (≈ creation) order until `f` returns false.
    pub(crate) fn scan(
        &self,
        rt: ResourceType,
        f: impl FnMut(StoredResource) -> StoreResult<bool>,
    ) -> StoreResult<()> {
        self.scan_after(rt, None, f)
    }

    /// `scan` starting after the id `after` (from the start when `None`).
    pub(crate) fn scan_after(
        &self,
        rt: ResourceType,
        after: Option<&str>,
        mut f: impl FnMut(StoredResource) -> StoreResult<bool>,
    ) -> StoreResult<()> {
        self.scan_raw_after(rt, after, |r| f(r.decode()?))
    }

    /// `scan_after` handing over each row undecoded, so the caller decodes only
    /// what it needs (a filter's prefilter on the bytes, a sparse decode).
    pub(crate) fn scan_raw_after(
        &self,
        rt: ResourceType,
        after: Option<&str>,
        f: impl FnMut(RawResource<'_>) -> StoreResult<bool>,
    ) -> StoreResult<()> {
        let t = self.txn.open_table(table(rt))?;
        let rows = walking(Ahead::Chunks, || match after {
            Some(a) => t.range::<&str>((std::ops::Bound::Excluded(a), std::ops::Bound::Unbounded)),
            None => t.range::<&str>(..),
        })?;
        feed_raw(Walk(Ahead::Chunks, rows), f)
    }

    /// The rows whose id sorts before `before`, undecoded, in descending id order
    /// (RFC 9865 `previousCursor` walks back from a page's first id).
    pub(crate) fn scan_raw_before(
        &self,
        rt: ResourceType,
        before: &str,
        f: impl FnMut(RawResource<'_>) -> StoreResult<bool>,
    ) -> StoreResult<()> {
        let t = self.txn.open_table(table(rt))?;
        feed_raw(
            Walk(
                Ahead::Chunks,
                walking(Ahead::Chunks, || t.range::<&str>(..before))?,
            )
            .rev(),
            f,
        )
    }

    /// Every row of `rt`, undecoded, shared out between two visitors that run at once
    /// on two threads (this one and a scoped one): `lower` gets rows in id order from
    /// the first, `upper` in id order from about the middle (found by stepping over
    /// half of the type's id table, keys only) to the last; every row goes to exactly
    /// one of them, and every row `lower` gets sorts before every row `upper` gets.
    /// Both walk up the file: the kernel reads ahead for each, where a walk down
    /// would wait for every page in turn. They claim rows `SPLIT_BATCH` at a time
    /// under one lock, so where they meet follows how far each has got. A visitor
    /// cannot stop the walk; an error of either stops both at their next claim and is
    /// returned (the lower half's first). A panic in a visitor is resumed here.
    /// Issue 10: a scan of 1,000,000 users whose pages must first be read from the
    /// disk and copied into redb's cache takes both cores instead of one.
    pub(crate) fn scan_raw_halves(
        &self,
        rt: ResourceType,
        lower: impl FnMut(RawResource<'_>) -> StoreResult<()> + Send,
        upper: impl FnMut(RawResource<'_>) -> StoreResult<()> + Send,
    ) -> StoreResult<()> {
        let meet = Mutex::new(Meeting::default());
        let (lower_table, upper_table) = (
            self.txn.open_table(table(rt))?,
            self.txn.open_table(table(rt))?,
        );
        let ids = self.txn.open_table(id_table(rt))?;
        std::thread::scope(|s| {
            let upper = s.spawn(|| {
                let mut keys = Walk(
                    Ahead::Pages,
                    walking(Ahead::Pages, || ids.range::<&str>(..))?,
                );
                for row in keys.by_ref().take(ids.len()? as usize / 2) {
                    drop(row?);
                }
                let middle = match keys.next() {
                    Some(row) => row?.0.value().to_owned(),
                    None => return Ok(()),
                };
                let rows = walking(Ahead::Chunks, || {
                    upper_table.range::<&str>(middle.as_str()..)
                })?;
                claim_rows(Walk(Ahead::Chunks, rows), Half::Upper, &meet, upper)
            });
            let lower = walking(Ahead::Chunks, || lower_table.range::<&str>(..))
                .map_err(StoreError::from)
                .and_then(|rows| claim_rows(Walk(Ahead::Chunks, rows), Half::Lower, &meet, lower));
            if lower.is_err() {
                meet.lock().unwrap_or_else(|p| p.into_inner()).failed = true;
            }
            let upper = upper
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
            lower.and(upper)
        })
    }

    /// `scan` after skipping the first `skip` resources in id order (offset
    /// paging). The skipped ids are stepped over in the type's id table (keys only,
    /// ~1/30 of the pages of the resource rows), then the resources are read from
    /// the first id not skipped on.
    pub(crate) fn scan_skipping(
        &self,
        rt: ResourceType,
        skip: usize,
        f: impl FnMut(StoredResource) -> StoreResult<bool>,
    ) -> StoreResult<()> {
        let first = {
            let ids = self.txn.open_table(id_table(rt))?;
            let mut rows = Walk(
                Ahead::Pages,
                walking(Ahead::Pages, || ids.range::<&str>(..))?,
            );
            for _ in 0..skip {
                match rows.next() {
                    Some(row) => drop(row?),
                    None => return Ok(()),
                }
            }
            match rows.next() {
                Some(row) => row?.0.value().to_owned(),
                None => return Ok(()),
            }
        };
        self.scan_from(rt, &first, f)
    }

    /// `scan` from the id `first` on (inclusive).
    fn scan_from(
        &self,
        rt: ResourceType,
        first: &str,
        mut f: impl FnMut(StoredResource) -> StoreResult<bool>,
    ) -> StoreResult<()> {
        let t = self.txn.open_table(table(rt))?;
        // The rows of one page, not of the table: their pages, not the MiB around each.
        for row in Walk(
            Ahead::Pages,
            walking(Ahead::Pages, || t.range::<&str>(first..))?,
        ) {
            let (_, v) = row?;
            if !f(serde_json::from_slice(v.value())?)? {
                break;
            }
        }
        Ok(())
    }

    /// Visits user ids in the order of their lowercased userName (the uniqueness
    /// index), descending when asked, after skipping `skip` of them by key alone.
    /// Stops when `f` returns false.
    pub(crate) fn users_by_name(
        &self,
        descending: bool,
        skip: usize,
        mut f: impl FnMut(&str) -> StoreResult<bool>,
    ) -> StoreResult<()> {
        let t = self.txn.open_table(USER_NAMES)?;
        let rows = Walk(Ahead::Pages, walking(Ahead::Pages, || t.range::<&str>(..))?);
        let rows: Box<dyn Iterator<Item = _>> = if descending {
            Box::new(rows.rev())
        } else {
            Box::new(rows)
        };
        for row in rows.skip(skip) {
            let (_, id) = row?;
            if !f(id.value())? {
                break;
            }
        }
        Ok(())
    }

    /// Number of (group, member) rows.
    pub(crate) fn membership_count(&self) -> StoreResult<u64> {
        Ok(self.txn.open_table(MEMBERS)?.len()?)
    }

    /// Visits every membership (group id, member id, member type, given display) in
    /// group order.
    pub(crate) fn scan_memberships(
        &self,
        mut f: impl FnMut(&str, &str, ResourceType, Option<String>) -> StoreResult<bool>,
    ) -> StoreResult<()> {
        let t = self.txn.open_table(MEMBERS)?;
        for row in Walk(Ahead::Pages, walking(Ahead::Pages, || t.iter())?) {
            let (k, v) = row?;
            let (g, m) = k.value();
            let (rt, display) = parse_member_value(v.value());
            if !f(g, m, rt, display)? {
                break;
            }
        }
        Ok(())
    }

    /// Up to `limit` resources of a type with ids after `after`, in id order.
    pub(crate) fn page_after(
        &self,
        rt: ResourceType,
        after: Option<&str>,
        limit: usize,
    ) -> StoreResult<Vec<StoredResource>> {
        let t = self.txn.open_table(table(rt))?;
        let mut out = Vec::with_capacity(limit);
        let range = match after {
            Some(a) => {
                t.range::<&str>((std::ops::Bound::Excluded(a), std::ops::Bound::Unbounded))?
            }
            None => t.range::<&str>(..)?,
        };
        for row in range.take(limit) {
            let (_, v) = row?;
            out.push(serde_json::from_slice(v.value())?);
        }
        Ok(out)
    }

    /// Sequence number of the newest event (0 when there is none).
    pub(crate) fn last_event_seq(&self) -> StoreResult<u64> {
        Ok(self
            .txn
            .open_table(EVENTS)?
            .last()?
            .map(|(k, _)| k.value())
            .unwrap_or(0))
    }

    /// Up to `limit` events with a sequence number above `after`, oldest first.
    pub(crate) fn events_after(&self, after: u64, limit: usize) -> StoreResult<Vec<Event>> {
        let t = self.txn.open_table(EVENTS)?;
        let mut out = Vec::new();
        for row in t.range(after + 1..)?.take(limit) {
            let (_, v) = row?;
            out.push(serde_json::from_slice(v.value())?);
        }
        Ok(out)
    }

    /// The newest `limit` events, newest first.
    #[cfg(test)]
    pub(crate) fn recent_events(&self, limit: usize) -> StoreResult<Vec<Event>> {
        let t = self.txn.open_table(EVENTS)?;
        let mut out = Vec::new();
        for row in t.iter()?.rev().take(limit) {
            let (_, v) = row?;
            out.push(serde_json::from_slice(v.value())?);
        }
        Ok(out)
    }

    pub(crate) fn txn(&self) -> &ReadTransaction {
        &self.txn
    }
}

#[cfg(test)]
mod tests;
