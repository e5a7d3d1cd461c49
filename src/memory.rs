//! Giving memory back to the operating system after heavy work. glibc's allocator
//! keeps freed pages in its arenas, so a server that once built a large answer (a
//! sorted query over a million users, a 100,000-member group) would hold that peak
//! for the rest of its life (issue 10 measured 8 GB kept after one sorted query).
//! `release_soon` asks one background thread to call `malloc_trim(0)` shortly after
//! the work ended, once the answer has usually been sent and freed; repeated calls
//! while a trim is pending cost one atomic swap. Knows nothing of what the work was.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{sync_channel, SyncSender};
use std::sync::OnceLock;
use std::time::Duration;

/// How long after heavy work the trim runs: the answer's buffers are freed once it
/// has been written to the connection, which for large answers takes a moment.
const SETTLE: Duration = Duration::from_millis(500);

/// A trim has been asked for and not yet run.
static PENDING: AtomicBool = AtomicBool::new(false);

fn trimmer() -> Option<&'static SyncSender<()>> {
    static TX: OnceLock<Option<SyncSender<()>>> = OnceLock::new();
    TX.get_or_init(|| {
        let (tx, rx) = sync_channel::<()>(1);
        std::thread::Builder::new()
            .name("memory-trim".into())
            .spawn(move || {
                while rx.recv().is_ok() {
                    std::thread::sleep(SETTLE);
                    PENDING.store(false, Ordering::SeqCst);
                    trim();
                }
            })
            .ok()
            .map(|_| tx)
    })
    .as_ref()
}

/// Asks for freed memory to be returned to the operating system soon (after
/// `SETTLE`); never blocks.
pub(crate) fn release_soon() {
    if PENDING.swap(true, Ordering::SeqCst) {
        return;
    }
    match trimmer() {
        Some(tx) => {
            let _ = tx.try_send(());
        }
        None => PENDING.store(false, Ordering::SeqCst),
    }
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn trim() {
    // SAFETY: malloc_trim only walks the allocator's own arenas under their locks;
    // it takes no pointers from us and is safe to call from any thread.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn trim() {}
