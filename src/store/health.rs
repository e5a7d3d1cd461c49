//! Storage failures the store survives: a full disk (ENOSPC, a quota, the file size
//! limit) and other I/O errors. redb latches an I/O error: after one, every operation
//! on that `Database`, reads included, answers `PreviousIo` until it is closed and
//! opened again. So the writer thread, which sees the failure first, closes and
//! reopens the file ([`DbSlot::give_up`]); redb's commit protocol keeps the last
//! durable commit, so no acknowledged write is lost, and reads go on from the
//! reopened file. While the disk is full, writes are refused for a back-off without
//! touching the file (each attempt on a full disk costs a reopen), then tried again,
//! so writing resumes by itself when space returns.
//!
//! Owns the classification of redb errors, the slot holding the open database, the
//! back-off and the counters behind `/metrics`. Knows nothing of HTTP: the edge maps
//! [`StoreError::DiskFull`] to 507 and [`StoreError::Io`] to 503.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use redb::Database;

use super::{Snapshot, StoreError, StoreOptions};

/// The first pause after a write failed on a full disk; it doubles while the disk
/// stays full, up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(500);
/// The longest pause between two attempts to write on a full disk: how long writing
/// may lag behind the space coming back.
const MAX_BACKOFF: Duration = Duration::from_secs(8);
/// After an open failed, how soon a reader may try again. The usual cause is a read
/// that still held the old handle (redb's file lock keeps a second handle out); it
/// ends within milliseconds, and reads should not wait for the writer's back-off.
const REOPEN_RETRY: Duration = Duration::from_millis(20);

/// An I/O error meaning "no space": the disk or the user's quota is full, or the file
/// reached the process's file size limit (RLIMIT_FSIZE).
pub(crate) fn is_disk_full(e: &std::io::Error) -> bool {
    use std::io::ErrorKind;
    matches!(
        e.kind(),
        ErrorKind::StorageFull | ErrorKind::QuotaExceeded | ErrorKind::FileTooLarge
    ) || matches!(
        e.raw_os_error(),
        Some(libc::ENOSPC | libc::EDQUOT | libc::EFBIG)
    )
}

/// A redb error as the store reports it: a full disk, an I/O error (the database must
/// be reopened), or any other storage failure.
pub(crate) fn classify(e: redb::Error) -> StoreError {
    match &e {
        redb::Error::Io(io) if is_disk_full(io) => StoreError::DiskFull(e.to_string()),
        redb::Error::Io(_) | redb::Error::PreviousIo | redb::Error::DatabaseClosed => {
            StoreError::Io(e.to_string())
        }
        _ => StoreError::Storage(e.to_string()),
    }
}

/// What `/metrics` and the dashboard show about storage failures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct StorageHealth {
    /// The last write failed because the disk is full, and none has succeeded since.
    pub(crate) disk_full: bool,
    /// Write batches that failed because the disk was full (since start).
    pub(crate) disk_full_failures: u64,
    /// Write batches that failed with another I/O error (since start).
    pub(crate) io_failures: u64,
    /// Times the database was closed and opened again after a failure.
    pub(crate) reopens: u64,
    /// Group commits since start, and the writes (jobs) they held: their ratio is
    /// the mean batch size.
    pub(crate) commits: u64,
    pub(crate) committed_writes: u64,
    /// Commits by duration (`txn.commit()`, the fsync included): how many took at
    /// most `COMMIT_BUCKETS[i]` seconds and more than the bucket before; the last
    /// counts those longer than every bound.
    pub(crate) commit_buckets: [u64; COMMIT_BUCKETS.len() + 1],
    /// The commits' durations added up, in microseconds.
    pub(crate) commit_micros: u64,
}

/// Upper bounds (seconds) of the commit-duration histogram (`/metrics`).
pub(crate) const COMMIT_BUCKETS: [f64; 10] =
    [0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.5, 2.0];

/// The open database, replaced when it is reopened after an I/O failure.
pub(crate) struct DbSlot {
    /// `None` while a reopen failed (reads and writes answer `Io` until one works).
    db: RwLock<Option<Arc<Database>>>,
    path: PathBuf,
    opts: StoreOptions,
    disk_full: AtomicBool,
    disk_full_failures: AtomicU64,
    io_failures: AtomicU64,
    reopens: AtomicU64,
    commits: AtomicU64,
    /// Bumped after every commit that wrote the directory, every rolled-back batch and
    /// file replacement, before any writer is answered (`DbSlot::changes`).
    changes: AtomicU64,
    committed_writes: AtomicU64,
    commit_buckets: [AtomicU64; COMMIT_BUCKETS.len() + 1],
    commit_micros: AtomicU64,
    /// While the disk is full: no write is tried before this instant, and the pause
    /// that follows the next failure.
    backoff: Mutex<Option<(Instant, Duration)>>,
    /// When the last open failed (`None` after a success): readers retry the open no
    /// sooner than [`REOPEN_RETRY`] after it.
    open_failed_at: Mutex<Option<Instant>>,
    /// The snapshot GETs share while the directory does not change, with the change
    /// count read before it began (`Store::shared_snapshot`). Dropped at every
    /// commit, failure, reopen and file replacement, so that it never holds on to
    /// pages later commits freed, nor to a handle being given up.
    shared: Mutex<Option<(u64, Arc<Snapshot>)>>,
}

fn unavailable() -> StoreError {
    StoreError::Io("the database could not be reopened after a storage failure".into())
}

impl DbSlot {
    pub(crate) fn new(db: Database, path: &Path, opts: &StoreOptions) -> DbSlot {
        DbSlot {
            db: RwLock::new(Some(Arc::new(db))),
            path: path.to_owned(),
            opts: opts.clone(),
            disk_full: AtomicBool::new(false),
            disk_full_failures: AtomicU64::new(0),
            io_failures: AtomicU64::new(0),
            reopens: AtomicU64::new(0),
            commits: AtomicU64::new(0),
            changes: AtomicU64::new(0),
            committed_writes: AtomicU64::new(0),
            commit_buckets: Default::default(),
            commit_micros: AtomicU64::new(0),
            backoff: Mutex::new(None),
            open_failed_at: Mutex::new(None),
            shared: Mutex::new(None),
        }
    }

    /// The shared snapshot, if it was begun at change count `changes` (the count
    /// now, read by the caller before calling).
    pub(crate) fn kept_snapshot(&self, changes: u64) -> Option<Arc<Snapshot>> {
        let kept = self.shared.lock().ok()?;
        match kept.as_ref() {
            Some((at, s)) if *at == changes => Some(s.clone()),
            _ => None,
        }
    }

    /// Shares `snapshot`, begun after the change count read `changes`, unless the
    /// count moved on meanwhile. Checked under the lock that [`DbSlot::forget_snapshot`]
    /// takes after the count moves, so a snapshot older than an acknowledged write
    /// is never kept.
    pub(crate) fn keep_snapshot(&self, changes: u64, snapshot: &Arc<Snapshot>) {
        let old = match self.shared.lock() {
            Ok(mut kept) if self.changes() == changes => kept.replace((changes, snapshot.clone())),
            _ => None,
        };
        drop(old);
    }

    /// Drops the shared snapshot (outside the lock: it may be the last reference to
    /// a read transaction).
    fn forget_snapshot(&self) {
        let old = self.shared.lock().ok().and_then(|mut kept| kept.take());
        drop(old);
    }

    /// The open database. If the last reopen failed, tries to open the file again
    /// first (at most once per [`REOPEN_RETRY`]): the read that kept the old handle
    /// open has usually ended, and reads go on without waiting for the next write.
    pub(crate) fn get(&self) -> Result<Arc<Database>, StoreError> {
        if let Some(db) = self.current()? {
            return Ok(db);
        }
        let due = self
            .open_failed_at
            .lock()
            .map_err(|_| unavailable())?
            .is_none_or(|t| t.elapsed() >= REOPEN_RETRY);
        if due {
            self.open_if_closed();
        }
        self.current()?.ok_or_else(unavailable)
    }

    /// The slot's handle as it is (`None` while a reopen failed).
    pub(crate) fn current(&self) -> Result<Option<Arc<Database>>, StoreError> {
        Ok(self.db.read().map_err(|_| unavailable())?.clone())
    }

    /// `latched` failed with an I/O error (a full disk, or a previous one that redb
    /// latched): unless the slot already holds another handle (someone recovered
    /// first), gives this one up, then opens the file again if the slot is empty.
    /// redb's file lock keeps the open out until every reference to the old handle
    /// is gone; until then reads retry it ([`DbSlot::get`]). Used by the writer after
    /// a failed batch and by a reader whose snapshot found the handle latched.
    pub(crate) fn give_up(&self, latched: Arc<Database>) {
        self.forget_snapshot();
        let Ok(mut slot) = self.db.write() else {
            return;
        };
        if slot.as_ref().is_some_and(|db| Arc::ptr_eq(db, &latched)) {
            drop(slot.take());
        }
        drop(latched);
        if slot.is_none() {
            self.open_into(&mut slot);
        }
    }

    /// Opens the file if the slot is empty (another thread may have opened it).
    fn open_if_closed(&self) {
        let Ok(mut slot) = self.db.write() else {
            return;
        };
        if slot.is_none() {
            self.open_into(&mut slot);
        }
    }

    pub(crate) fn health(&self) -> StorageHealth {
        StorageHealth {
            disk_full: self.disk_full.load(Ordering::Relaxed),
            disk_full_failures: self.disk_full_failures.load(Ordering::Relaxed),
            io_failures: self.io_failures.load(Ordering::Relaxed),
            reopens: self.reopens.load(Ordering::Relaxed),
            commits: self.commits.load(Ordering::Relaxed),
            committed_writes: self.committed_writes.load(Ordering::Relaxed),
            commit_buckets: std::array::from_fn(|i| self.commit_buckets[i].load(Ordering::Relaxed)),
            commit_micros: self.commit_micros.load(Ordering::Relaxed),
        }
    }

    /// `Err(DiskFull)` while the disk was full a moment ago: the writer answers the
    /// batch with it without touching the file.
    pub(crate) fn check_backoff(&self) -> Result<(), StoreError> {
        let backoff = self.backoff.lock().map_err(|_| unavailable())?;
        match *backoff {
            Some((until, _)) if Instant::now() < until => Err(StoreError::DiskFull(
                "the disk was full a moment ago; writing is tried again shortly".into(),
            )),
            _ => Ok(()),
        }
    }

    /// How many times the directory may have changed since the store was opened:
    /// every commit that wrote it, rolled-back batch and file replacement counts one,
    /// counted after the change is visible to new snapshots and before any writer is
    /// answered. A commit of bookkeeping alone (tokens' last use and traffic counts,
    /// `Store::write_bookkeeping`) does not count: nothing a SCIM answer is rendered
    /// from changed. A value read before a snapshot began that still holds later
    /// means no write of the directory was acknowledged since (the rendered-answer
    /// cache, `app::answers`, relies on it).
    pub(crate) fn changes(&self) -> u64 {
        self.changes.load(Ordering::SeqCst)
    }

    /// A batch of `writes` jobs committed in `took` (counted for `/metrics`); it wrote
    /// the directory unless `directory` is false (bookkeeping alone). The disk has
    /// room again if it was full.
    pub(crate) fn committed(&self, writes: usize, took: Duration, directory: bool) {
        if directory {
            self.changes.fetch_add(1, Ordering::SeqCst);
        }
        // Every commit: a snapshot kept across it would keep the pages it freed.
        self.forget_snapshot();
        self.commits.fetch_add(1, Ordering::Relaxed);
        self.committed_writes
            .fetch_add(writes as u64, Ordering::Relaxed);
        let secs = took.as_secs_f64();
        let bucket = COMMIT_BUCKETS
            .iter()
            .position(|b| secs <= *b)
            .unwrap_or(COMMIT_BUCKETS.len());
        self.commit_buckets[bucket].fetch_add(1, Ordering::Relaxed);
        self.commit_micros.fetch_add(
            u64::try_from(took.as_micros()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
        if self.disk_full.swap(false, Ordering::Relaxed) {
            tracing::warn!(
                path = %self.path.display(),
                "writes resumed: the disk holding the database has room again"
            );
        }
        if let Ok(mut b) = self.backoff.lock() {
            *b = None;
        }
    }

    /// A batch failed with `err`. A full disk or an I/O error left redb's handle
    /// latched: `db` (the writer's reference) is given up and the file reopened, so
    /// that reads go on and the next write can succeed. Other errors change nothing.
    pub(crate) fn failed(&self, db: Arc<Database>, err: &StoreError) {
        // A rolled-back batch changed nothing, but the file may be reopened: counted
        // as a change so that nothing read before is trusted after.
        self.changes.fetch_add(1, Ordering::SeqCst);
        self.forget_snapshot();
        match err {
            StoreError::DiskFull(detail) => {
                self.disk_full_failures.fetch_add(1, Ordering::Relaxed);
                if !self.disk_full.swap(true, Ordering::Relaxed) {
                    tracing::error!(
                        path = %self.path.display(),
                        error = %detail,
                        "the disk holding the database is full: writes are refused (507) \
                         until space is freed, reads go on; nothing acknowledged is lost"
                    );
                }
                if let Ok(mut b) = self.backoff.lock() {
                    let pause = b.map_or(FIRST_BACKOFF, |(_, p)| (p * 2).min(MAX_BACKOFF));
                    *b = Some((Instant::now() + pause, pause));
                }
            }
            StoreError::Io(detail) => {
                self.io_failures.fetch_add(1, Ordering::Relaxed);
                tracing::error!(
                    path = %self.path.display(),
                    error = %detail,
                    "storage I/O error: the write was not stored; reopening the database"
                );
            }
            _ => return,
        }
        self.give_up(db);
    }

    /// Opens the file into the (empty) slot; on failure leaves it empty, notes when,
    /// and logs why.
    fn open_into(&self, slot: &mut Option<Arc<Database>>) {
        let failed_at = match super::open_database(&self.path, &self.opts) {
            Ok(db) => {
                self.reopens.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(path = %self.path.display(), "reopened the database after a storage failure");
                *slot = Some(Arc::new(db));
                None
            }
            Err(e) => {
                tracing::warn!(
                    path = %self.path.display(),
                    error = %e,
                    "cannot reopen the database yet (tried again at the next read or write); \
                     until then reads and writes answer 503"
                );
                Some(Instant::now())
            }
        };
        if let Ok(mut t) = self.open_failed_at.lock() {
            *t = failed_at;
        }
    }

    /// Goes on with `fresh` (the database rewritten into a new file,
    /// `Store::rewrite_file`); snapshots of the old one finish on it.
    pub(crate) fn replace(&self, fresh: Database) -> Result<(), StoreError> {
        let mut slot = self.db.write().map_err(|_| unavailable())?;
        *slot = Some(Arc::new(fresh));
        self.changes.fetch_add(1, Ordering::SeqCst);
        drop(slot);
        self.forget_snapshot();
        Ok(())
    }

    /// The writer found no open database: tries to open it again (at most once per
    /// back-off while the disk is full).
    pub(crate) fn ensure_open(&self) -> Result<Arc<Database>, StoreError> {
        if let Ok(db) = self.get() {
            return Ok(db);
        }
        self.check_backoff()?;
        self.open_if_closed();
        self.get()
    }
}
