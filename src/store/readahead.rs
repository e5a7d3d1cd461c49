//! Reading ahead of a walk over a table (issue 10: a scan after a start, with the
//! database file not in the OS page cache). redb reads one page at a time, when a walk
//! reaches it, and a table's leaves lie scattered between the pages of the other tables
//! (a million users' leaves: one in three pages of the first 1.1 GB of the file, in no
//! file order the kernel's readahead can follow), so a cold scan waited on the disk for
//! each leaf in turn. This module gives redb its file through [`ReadAheadFile`], a
//! `StorageBackend` that reads as redb's own `FileBackend` does and, for a read made by
//! a walk ([`walking`]), looks at the page it read: when it is a B-tree branch, it asks
//! the kernel (`posix_fadvise(WILLNEED)`) to read the branch's children at once, so the
//! walk finds the next pages in the OS page cache instead of waiting for each. How
//! depends on what the walk reads ([`Ahead`]): a walk over an index (ids, userNames)
//! reads a small share of the file, so just its pages are asked for; a walk over the
//! resource rows reads about a third of the file's first gigabyte at 1M users (the
//! records are most of its bytes), and one branch's children lie spread over 100 MB
//! between the pages the branches after it will need, so the MiB around each child is
//! asked for, once per walk and thread: about 1,100 large reads instead of 100,000
//! single pages, each of which cost the kernel about as much as the synchronous read
//! it saved (measured in docs/PERFORMANCE.md, "Cold scan (eighth session)").
//!
//! Only hints: the pages are read by redb as before and checked by it (checksums), so a
//! page this module misreads costs a useless read of the disk, never a wrong answer. It
//! reads redb's file format 3 (redb 4): the super-header's page size and region sizes,
//! a branch page's child count and page numbers (redb's `btree_base.rs`,
//! `page_store/base.rs`, `layout.rs`). It knows nothing of the tables or their rows.
//! The read-ahead goes to the OS page cache, not to this process's memory, and is at
//! most the children of the branch pages a walk reads (bounded per branch:
//! `MAX_PAGES_PER_BRANCH`, `MAX_CHUNKS_PER_BRANCH`); `storage.read_ahead = false`
//! turns it off.

use std::cell::{Cell, RefCell};
use std::collections::HashSet;
use std::fs::File;
use std::ops::Bound;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use redb::backends::FileBackend;
use redb::{BackendError, StorageBackend};

/// What redb 4's backend methods return for I/O (its own alias is not exported).
type BackendIoError = std::io::Error;

/// What a walk reads, which decides how its next pages are read ahead.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Ahead {
    /// An index's keys (`user_ids`, `idx_user_name`, `members`): their pages alone.
    Pages,
    /// A resource table's rows: the `CHUNK` around each of them, once per walk.
    Chunks,
}

thread_local! {
    /// Set while this thread walks a table ([`walking`]): only its reads are looked at.
    static WALKING: Cell<Option<Ahead>> = const { Cell::new(None) };
    /// The chunks this thread has asked for lately (`Ahead::Chunks`), and since when:
    /// a walk asks for each chunk once; forgotten after `CHUNKS_FORGOTTEN`, when the
    /// kernel may have dropped them again.
    static ASKED: RefCell<(Option<Instant>, HashSet<u64>)> = RefCell::new((None, HashSet::new()));
}

/// Runs `f` as part of a walk over a table that reads `ahead`: the branch pages redb
/// reads from the file meanwhile on this thread have their children read ahead. For
/// what a walk reads itself (a range's creation and its `next`), not for the lookups
/// a caller makes per row, which would read ahead the children of branches they only
/// pass through.
pub(super) fn walking<T>(ahead: Ahead, f: impl FnOnce() -> T) -> T {
    /// Puts the flag back as it was, also when `f` unwinds.
    struct Restore(Option<Ahead>);
    impl Drop for Restore {
        fn drop(&mut self) {
            WALKING.with(|w| w.set(self.0));
        }
    }
    let _restore = Restore(WALKING.with(|w| w.replace(Some(ahead))));
    f()
}

/// An iterator whose `next` is part of a walk ([`walking`]).
pub(super) struct Walk<I>(pub(super) Ahead, pub(super) I);

impl<I: Iterator> Iterator for Walk<I> {
    type Item = I::Item;

    fn next(&mut self) -> Option<I::Item> {
        walking(self.0, || self.1.next())
    }
}

impl<I: DoubleEndedIterator> DoubleEndedIterator for Walk<I> {
    fn next_back(&mut self) -> Option<I::Item> {
        walking(self.0, || self.1.next_back())
    }
}

/// redb's page types (first byte of a B-tree page).
const BRANCH: u8 = 2;
/// redb's magic number, the first bytes of the file.
const MAGIC: [u8; 9] = [b'r', b'e', b'd', b'b', 0x1A, 0x0A, 0xA9, 0x0D, 0x0A];
/// A branch page: type (1), padding (1), key count (u16 LE), padding (4), then per
/// child a 16-byte checksum, then per child an 8-byte page number.
const BRANCH_CHILDREN_AT: usize = 8;
const CHECKSUM_BYTES: usize = 16;
const PAGE_NUMBER_BYTES: usize = 8;
/// Children closer than this in the file are read as one range (fewer, larger reads
/// for at most this many bytes read in vain between them).
const MERGE_GAP: u64 = 32 << 10;
/// At most this many bytes of pages read ahead for one branch page (`Ahead::Pages`; a
/// branch of large-value leaves, up to 2^order pages each, is not read ahead beyond it).
const MAX_PAGES_PER_BRANCH: u64 = 16 << 20;
/// The unit of `Ahead::Chunks`: the aligned MiB around a child.
const CHUNK_SHIFT: u32 = 20;
/// At most this many chunks asked for per branch page (`Ahead::Chunks`): a branch of
/// 4 KiB pages has at most about 170 children.
const MAX_CHUNKS_PER_BRANCH: usize = 128;
/// After this long a thread asks again for chunks it asked for.
const CHUNKS_FORGOTTEN: Duration = Duration::from_secs(10);

/// Where redb's pages are in the file: read once from the super-header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Layout {
    page_size: u64,
    /// Bytes of a region's allocator header before its first page.
    region_header: u64,
    /// Bytes of a full region, header included.
    region: u64,
}

impl Layout {
    /// From the first 24 bytes of the file: magic, god byte, padding, page size (u32
    /// LE at 12), region header pages (at 16), region data pages (at 20). `None`
    /// unless they look like redb's.
    fn parse(header: &[u8]) -> Option<Layout> {
        let word = |at: usize| {
            header
                .get(at..at + 4)
                .and_then(|b| b.try_into().ok())
                .map(|b: [u8; 4]| u64::from(u32::from_le_bytes(b)))
        };
        if header.get(..MAGIC.len())? != MAGIC {
            return None;
        }
        let (page_size, header_pages, data_pages) = (word(12)?, word(16)?, word(20)?);
        if !page_size.is_power_of_two()
            || !(512..=(1 << 16)).contains(&page_size)
            || data_pages == 0
        {
            return None;
        }
        Some(Layout {
            page_size,
            region_header: header_pages * page_size,
            region: (header_pages + data_pages) * page_size,
        })
    }

    /// The file range of a page number as redb stores it: page index (20 bits, fewer
    /// for higher orders), region (20 bits from bit 20), order (5 bits from bit 59); the
    /// super-header takes the first page.
    fn range(&self, page_number: u64) -> (u64, u64) {
        let order = (page_number >> 59) as u32;
        let index = page_number & (0x000F_FFFF >> order.min(20));
        let region = (page_number >> 20) & 0x000F_FFFF;
        let len = self.page_size << order.min(20);
        let start = self.page_size + region * self.region + self.region_header + index * len;
        (start, len)
    }

    /// The file ranges of a branch page's children, sorted. Empty when `page` is not a
    /// branch page.
    fn child_pages(&self, page: &[u8]) -> Vec<(u64, u64)> {
        if page.first() != Some(&BRANCH) || page.len() < BRANCH_CHILDREN_AT {
            return Vec::new();
        }
        let children = usize::from(u16::from_le_bytes([page[2], page[3]])) + 1;
        let numbers_at = BRANCH_CHILDREN_AT + CHECKSUM_BYTES * children;
        let Some(numbers) = page.get(numbers_at..numbers_at + PAGE_NUMBER_BYTES * children) else {
            return Vec::new();
        };
        let mut pages: Vec<(u64, u64)> = numbers
            .chunks_exact(PAGE_NUMBER_BYTES)
            .filter_map(|b| b.try_into().ok())
            .map(|b| self.range(u64::from_le_bytes(b)))
            .collect();
        pages.sort_unstable();
        pages
    }

    /// `child_pages`, those closer than `MERGE_GAP` merged, at most
    /// `MAX_PAGES_PER_BRANCH` bytes (`Ahead::Pages`).
    fn children(&self, page: &[u8]) -> Vec<(u64, u64)> {
        let mut merged: Vec<(u64, u64)> = Vec::new();
        let mut total = 0;
        for (start, len) in self.child_pages(page) {
            if total + len > MAX_PAGES_PER_BRANCH {
                break;
            }
            total += len;
            match merged.last_mut() {
                Some((s, l)) if start <= *s + *l + MERGE_GAP => *l = (*l).max(start + len - *s),
                _ => merged.push((start, len)),
            }
        }
        merged
    }
}

/// redb's `FileBackend` with read-ahead for walks (see the module's comment).
#[derive(Debug)]
pub(super) struct ReadAheadFile {
    file: FileBackend,
    /// The same file for `posix_fadvise` (a second descriptor: the page cache is the
    /// file's, whichever descriptor asks).
    hint: Option<File>,
    layout: OnceLock<Layout>,
    /// What walks read and which ranges were asked for (tests compare them).
    #[cfg(test)]
    seen: std::sync::Arc<std::sync::Mutex<Seen>>,
}

/// The offsets walks read and the ranges asked for, in order (tests only).
#[cfg(test)]
#[derive(Debug, Default)]
struct Seen {
    reads: Vec<u64>,
    asked: Vec<(u64, u64)>,
}

impl ReadAheadFile {
    /// `file` as redb's backend; reads ahead for walks when `read_ahead` is set.
    pub(super) fn new(file: File, read_ahead: bool) -> Result<ReadAheadFile, redb::DatabaseError> {
        let hint = if read_ahead {
            file.try_clone().ok()
        } else {
            None
        };
        Ok(ReadAheadFile {
            file: FileBackend::new(file)?,
            hint,
            layout: OnceLock::new(),
            #[cfg(test)]
            seen: Default::default(),
        })
    }

    /// The layout, read from the file's first bytes the first time it is needed.
    fn layout(&self) -> Option<Layout> {
        if let Some(l) = self.layout.get() {
            return Some(*l);
        }
        let mut header = [0u8; 24];
        self.file.read(0, &mut header).ok()?;
        let l = Layout::parse(&header)?;
        Some(*self.layout.get_or_init(|| l))
    }

    /// Asks the kernel to read the children of `page` when it is a branch page, as
    /// `ahead` says.
    fn read_ahead_children(&self, page: &[u8], ahead: Ahead) {
        let Some(file) = &self.hint else { return };
        if page.first() != Some(&BRANCH) {
            return;
        }
        let Some(layout) = self.layout() else { return };
        match ahead {
            Ahead::Pages => {
                for (start, len) in layout.children(page) {
                    self.ask(file, start, len);
                }
            }
            Ahead::Chunks => {
                let chunks = ASKED.with(|asked| {
                    let (since, set) = &mut *asked.borrow_mut();
                    if since.is_none_or(|t| t.elapsed() > CHUNKS_FORGOTTEN) {
                        *since = Some(Instant::now());
                        set.clear();
                    }
                    new_chunks(&layout.child_pages(page), set)
                });
                for c in chunks {
                    self.ask(file, c << CHUNK_SHIFT, 1 << CHUNK_SHIFT);
                }
            }
        }
    }

    /// Asks the kernel to read a range ahead.
    fn ask(&self, file: &File, start: u64, len: u64) {
        #[cfg(test)]
        self.seen.lock().unwrap().asked.push((start, len));
        will_need(file, start, len);
    }
}

/// The chunks holding `pages` that are not in `asked`, at most
/// `MAX_CHUNKS_PER_BRANCH`, in file order; added to `asked`.
fn new_chunks(pages: &[(u64, u64)], asked: &mut HashSet<u64>) -> Vec<u64> {
    let mut out = Vec::new();
    for &(start, len) in pages {
        let (first, last) = (start >> CHUNK_SHIFT, (start + len - 1) >> CHUNK_SHIFT);
        for c in first..=last {
            if out.len() == MAX_CHUNKS_PER_BRANCH {
                return out;
            }
            if asked.insert(c) {
                out.push(c);
            }
        }
    }
    out
}

/// `posix_fadvise(WILLNEED)`: the kernel starts reading the range into its page cache
/// and returns. Errors are ignored (a hint).
#[cfg(target_os = "linux")]
fn will_need(file: &File, start: u64, len: u64) {
    use std::os::fd::AsRawFd;
    let (Ok(start), Ok(len)) = (i64::try_from(start), i64::try_from(len)) else {
        return;
    };
    // SAFETY: a plain system call on a descriptor this struct owns; no memory is passed.
    unsafe {
        libc::posix_fadvise(file.as_raw_fd(), start, len, libc::POSIX_FADV_WILLNEED);
    }
}

#[cfg(not(target_os = "linux"))]
fn will_need(_file: &File, _start: u64, _len: u64) {}

impl StorageBackend for ReadAheadFile {
    fn len(&self) -> Result<u64, BackendIoError> {
        self.file.len()
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> Result<(), BackendIoError> {
        self.file.read(offset, out)?;
        if let Some(ahead) = WALKING.with(Cell::get) {
            #[cfg(test)]
            self.seen.lock().unwrap().reads.push(offset);
            self.read_ahead_children(out, ahead);
        }
        Ok(())
    }

    fn set_len(&self, len: u64) -> Result<(), BackendIoError> {
        self.file.set_len(len)
    }

    fn sync_data(&self) -> Result<(), BackendIoError> {
        self.file.sync_data()
    }

    fn write(&self, offset: u64, data: &[u8]) -> Result<(), BackendIoError> {
        self.file.write(offset, data)
    }

    fn close(&self) -> Result<(), BackendIoError> {
        self.file.close()
    }

    fn try_lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<bool, BackendError> {
        self.file.try_lock_range(start, end)
    }

    fn try_lock_shared_range(
        &self,
        start: Bound<u64>,
        end: Bound<u64>,
    ) -> Result<bool, BackendError> {
        self.file.try_lock_shared_range(start, end)
    }

    fn lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.file.lock_range(start, end)
    }

    fn lock_shared_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.file.lock_shared_range(start, end)
    }

    fn unlock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.file.unlock_range(start, end)
    }

    fn query_lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<bool, BackendError> {
        self.file.query_lock_range(start, end)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout() -> Layout {
        let mut h = [0u8; 24];
        h[..9].copy_from_slice(&MAGIC);
        h[12..16].copy_from_slice(&4096u32.to_le_bytes());
        h[16..20].copy_from_slice(&0u32.to_le_bytes());
        h[20..24].copy_from_slice(&(1u32 << 20).to_le_bytes());
        Layout::parse(&h).unwrap()
    }

    fn page_number(region: u64, index: u64, order: u64) -> u64 {
        index | region << 20 | order << 59
    }

    fn branch(children: &[u64]) -> Vec<u8> {
        let mut p = vec![0u8; 4096];
        p[0] = BRANCH;
        p[2..4].copy_from_slice(&u16::try_from(children.len() - 1).unwrap().to_le_bytes());
        let at = BRANCH_CHILDREN_AT + CHECKSUM_BYTES * children.len();
        for (i, c) in children.iter().enumerate() {
            p[at + 8 * i..at + 8 * i + 8].copy_from_slice(&c.to_le_bytes());
        }
        p
    }

    #[test]
    fn layout_is_read_from_the_super_header_and_nothing_else() {
        let l = layout();
        assert_eq!(
            l,
            Layout {
                page_size: 4096,
                region_header: 0,
                region: 4096 << 20
            }
        );
        let mut not_redb = [0u8; 24];
        not_redb[12..16].copy_from_slice(&4096u32.to_le_bytes());
        not_redb[20] = 1;
        assert_eq!(Layout::parse(&not_redb), None);
        assert_eq!(Layout::parse(&MAGIC), None, "too short");
    }

    #[test]
    fn a_page_number_maps_to_its_place_in_the_file() {
        let l = layout();
        // The super-header is the first page; region 0's pages follow it.
        assert_eq!(l.range(page_number(0, 0, 0)), (4096, 4096));
        assert_eq!(l.range(page_number(0, 5551, 0)), (4096 + 5551 * 4096, 4096));
        // Order 2: pages of 16 KiB, indexed in that size.
        assert_eq!(l.range(page_number(0, 3, 2)), (4096 + 3 * 16384, 16384));
        // Region 1 starts a region's size further.
        assert_eq!(
            l.range(page_number(1, 2, 0)),
            (4096 + (4096 << 20) + 2 * 4096, 4096)
        );
    }

    #[test]
    fn a_branch_reads_ahead_its_children_sorted_and_merged() {
        let l = layout();
        // Out of order; 10 and 11 adjacent, 13 within the merge gap, 500 far away.
        let p = branch(&[
            page_number(0, 500, 0),
            page_number(0, 10, 0),
            page_number(0, 13, 0),
            page_number(0, 11, 0),
        ]);
        assert_eq!(
            l.children(&p),
            vec![(4096 + 10 * 4096, 4 * 4096), (4096 + 500 * 4096, 4096)]
        );
    }

    #[test]
    fn a_leaf_or_a_cut_page_reads_nothing_ahead() {
        let l = layout();
        let mut leaf = branch(&[page_number(0, 1, 0), page_number(0, 2, 0)]);
        leaf[0] = 1;
        assert!(l.children(&leaf).is_empty());
        let mut cut = branch(&[page_number(0, 1, 0), page_number(0, 2, 0)]);
        cut[2..4].copy_from_slice(&u16::MAX.to_le_bytes());
        assert!(
            l.children(&cut).is_empty(),
            "more children than the page holds"
        );
    }

    #[test]
    fn one_branch_reads_ahead_at_most_its_bound() {
        let l = layout();
        // 40 leaves of order 8 (1 MiB each), far apart: 16 of them fit the bound.
        let kids: Vec<u64> = (0..40).map(|i| page_number(0, i * 4, 8)).collect();
        let ranges = l.children(&branch(&kids));
        assert_eq!(
            ranges.iter().map(|r| r.1).sum::<u64>(),
            MAX_PAGES_PER_BRANCH
        );
    }

    /// A walk over a table redb wrote, through this backend with an empty cache: after
    /// the root, every page it reads was asked for before (guards the format read here,
    /// which is redb's and may change with it).
    fn walk_reads_what_was_asked_for(ahead: Ahead) {
        use redb::ReadableDatabase;
        const T: redb::TableDefinition<&str, &[u8]> = redb::TableDefinition::new("t");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.redb");
        let open = || {
            let file = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(&path)
                .unwrap();
            let backend = ReadAheadFile::new(file, true).unwrap();
            let seen = backend.seen.clone();
            let db = redb::Builder::new()
                .set_cache_size(1 << 20)
                .create_with_backend(backend)
                .unwrap();
            (db, seen)
        };
        let (db, _) = open();
        // Several commits, as a directory grows: pages are copied and freed between them.
        for batch in 0..4 {
            let w = db.begin_write().unwrap();
            {
                let mut t = w.open_table(T).unwrap();
                for i in 0..5_000 {
                    let key = format!("{:08}", i * 4 + batch);
                    t.insert(key.as_str(), [7u8; 300].as_slice()).unwrap();
                }
            }
            w.commit().unwrap();
        }
        drop(db);
        let (db, seen) = open();
        let txn = db.begin_read().unwrap();
        let t = txn.open_table(T).unwrap();
        let rows = Walk(ahead, walking(ahead, || t.range::<&str>(..)).unwrap()).count();
        assert_eq!(rows, 20_000);
        let seen = seen.lock().unwrap();
        // 20,000 rows of 300 bytes: about 1,700 leaves under a root and a few branches.
        assert!(seen.reads.len() > 1_500, "{} pages read", seen.reads.len());
        let asked = |o: &u64| seen.asked.iter().any(|(s, l)| (*s..s + l).contains(o));
        let not_asked: Vec<_> = seen.reads.iter().skip(1).filter(|o| !asked(o)).collect();
        assert!(
            not_asked.is_empty(),
            "read without being asked for: {not_asked:?}"
        );
    }

    #[test]
    fn an_index_walk_reads_pages_asked_for() {
        walk_reads_what_was_asked_for(Ahead::Pages);
    }

    #[test]
    fn a_row_walk_reads_chunks_asked_for() {
        walk_reads_what_was_asked_for(Ahead::Chunks);
    }

    #[test]
    fn rows_read_ahead_each_chunk_once() {
        let l = layout();
        let mut asked = HashSet::new();
        // Pages 10 and 11 share the first MiB (256 pages of 4 KiB); 300 is in the next.
        let p = branch(&[
            page_number(0, 300, 0),
            page_number(0, 10, 0),
            page_number(0, 11, 0),
        ]);
        assert_eq!(new_chunks(&l.child_pages(&p), &mut asked), vec![0, 1]);
        // A later branch whose children lie in those chunks and one more.
        let q = branch(&[page_number(0, 12, 0), page_number(0, 600, 0)]);
        assert_eq!(new_chunks(&l.child_pages(&q), &mut asked), vec![2]);
    }

    #[test]
    fn rows_read_ahead_at_most_the_bound_per_branch() {
        let l = layout();
        let kids: Vec<u64> = (0..170).map(|i| page_number(0, i * 256, 0)).collect();
        let mut asked = HashSet::new();
        let first = new_chunks(&l.child_pages(&branch(&kids)), &mut asked);
        assert_eq!(first.len(), MAX_CHUNKS_PER_BRANCH);
        // The rest come when the walk reads the branch again... or the next one.
        let rest = new_chunks(&l.child_pages(&branch(&kids)), &mut asked);
        assert_eq!(rest.len(), 170 - MAX_CHUNKS_PER_BRANCH);
    }
}
