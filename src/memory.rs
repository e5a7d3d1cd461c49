//! Memory: how much this process may use, and giving it back to the operating system
//! after heavy work.
//!
//! `budget` is what the page cache is sized from (`server`): the machine's memory
//! (`/proc/meminfo`, or `sysinfo(2)` where systemd's `ProcSubset=pid` hides it) or, when
//! lower, the memory limit of the process's own cgroup (systemd's `MemoryMax=` lives in
//! `/sys/fs/cgroup/system.slice/scimbridge.service/memory.max`, named by
//! `/proc/self/cgroup`; every ancestor's limit applies too). The figure says where it
//! came from, for the log.
//!
//! glibc's allocator keeps freed pages in its arenas, so a server that once built a
//! large answer (a sorted query over a million users, a 100,000-member group) would
//! hold that peak for the rest of its life (issue 10 measured 8 GB kept after one
//! sorted query). `release_soon` asks one background thread to call `malloc_trim(0)`
//! shortly after the work ended, once the answer has usually been sent and freed;
//! repeated calls while a trim is pending cost one atomic swap. Knows nothing of what
//! the work was.

use std::path::{Path, PathBuf};
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

/// Memory the process may use, in bytes, and where that figure was read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Budget {
    pub bytes: u64,
    /// What the figure is, for the log: `the machine's memory`, `the memory limit of
    /// this process's cgroup`.
    pub what: &'static str,
    /// Where it was read: `/proc/meminfo`, `sysinfo(2)`, `/sys/fs/cgroup/…/memory.max`.
    pub read_from: String,
}

/// The memory this process may use: the machine's, or its cgroup's limit when that is
/// lower; `None` when neither can be read.
pub(crate) fn budget() -> Option<Budget> {
    let machine = machine_total().map(|(bytes, from)| Budget {
        bytes,
        what: "the machine's memory",
        read_from: from.to_owned(),
    });
    let cgroup = std::fs::read_to_string("/proc/self/cgroup")
        .ok()
        .and_then(|text| cgroup_limit(&text, Path::new("/sys/fs/cgroup")))
        .map(|(bytes, file)| Budget {
            bytes,
            what: "the memory limit of this process's cgroup",
            read_from: file.display().to_string(),
        });
    match (machine, cgroup) {
        (Some(m), Some(c)) if c.bytes < m.bytes => Some(c),
        (m, c) => m.or(c),
    }
}

/// The machine's memory in bytes and where it was read: `MemTotal` of
/// `/proc/meminfo`, else `sysinfo(2)` (which systemd's `ProcSubset=pid` does not hide).
fn machine_total() -> Option<(u64, &'static str)> {
    let meminfo = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| meminfo_total(&m));
    meminfo
        .map(|b| (b, "/proc/meminfo"))
        .or_else(|| sysinfo_total().map(|b| (b, "sysinfo(2)")))
}

/// `MemTotal` of a `/proc/meminfo` text, in bytes.
fn meminfo_total(meminfo: &str) -> Option<u64> {
    meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map(|kb| kb.saturating_mul(1024))
}

#[cfg(target_os = "linux")]
fn sysinfo_total() -> Option<u64> {
    // SAFETY: sysinfo only writes the struct we pass, which is plain data that an
    // all-zero value initialises.
    let mut info: libc::sysinfo = unsafe { std::mem::zeroed() };
    if unsafe { libc::sysinfo(&mut info) } != 0 {
        return None;
    }
    let unit = u64::from(info.mem_unit.max(1));
    // `c_ulong`: 32 bits on some targets.
    Some((info.totalram as u64).saturating_mul(unit)).filter(|&b| b > 0)
}

#[cfg(not(target_os = "linux"))]
fn sysinfo_total() -> Option<u64> {
    None
}

/// A limit at or above this is "no limit" (cgroup v1 writes 2^63 rounded down to a
/// page for an unlimited group).
const UNLIMITED: u64 = 1 << 60;

/// The smallest memory limit that applies to the cgroup named in `proc_self_cgroup`
/// (the text of `/proc/self/cgroup`), with the file it was read from. `root` is where
/// the cgroup file systems are mounted (`/sys/fs/cgroup`). Each of the group's
/// directories, from its own up to the mount's root, is asked: cgroup v2's
/// `memory.max` (at `root`, or `root/unified` on a hybrid system) and v1's
/// `memory/…/memory.limit_in_bytes`. A directory that is not there is skipped: inside a
/// container the mount's root is the container's own group, whose path
/// `/proc/self/cgroup` names from the host's root. `max` and absurdly large values are
/// no limit.
fn cgroup_limit(proc_self_cgroup: &str, root: &Path) -> Option<(u64, PathBuf)> {
    let mut best: Option<(u64, PathBuf)> = None;
    for line in proc_self_cgroup.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(_id), Some(controllers), Some(path)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        let places: Vec<(PathBuf, &str)> = if controllers.is_empty() {
            vec![
                (root.to_path_buf(), "memory.max"),
                (root.join("unified"), "memory.max"),
            ]
        } else if controllers.split(',').any(|c| c == "memory") {
            vec![(root.join("memory"), "memory.limit_in_bytes")]
        } else {
            continue;
        };
        // The kernel names the group from the mount's root: `/system.slice/x.service`.
        let dirs: Vec<&str> = path
            .split('/')
            .filter(|c| !c.is_empty() && *c != "." && *c != "..")
            .collect();
        for (base, file) in places {
            for depth in (0..=dirs.len()).rev() {
                let at = dirs[..depth]
                    .iter()
                    .fold(base.clone(), |p, d| p.join(d))
                    .join(file);
                let Some(limit) = std::fs::read_to_string(&at)
                    .ok()
                    .and_then(|v| v.trim().parse::<u64>().ok())
                    .filter(|&v| v < UNLIMITED)
                else {
                    continue;
                };
                if best.as_ref().is_none_or(|(b, _)| limit < *b) {
                    best = Some((limit, at));
                }
            }
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meminfo_total_is_read_in_bytes() {
        let text = "MemFree:   100 kB\nMemTotal:       24684096 kB\n";
        assert_eq!(meminfo_total(text), Some(24_684_096 * 1024));
        assert_eq!(meminfo_total("MemFree: 1 kB\n"), None);
    }

    #[test]
    fn the_machine_total_is_known_without_proc_meminfo() {
        // sysinfo(2) is what answers under systemd's ProcSubset=pid.
        assert!(sysinfo_total().is_some_and(|b| b > 16 << 20));
    }

    fn write(root: &Path, rel: &str, text: &str) {
        let path = root.join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }

    #[test]
    fn a_systemd_services_memory_max_is_found_under_its_own_group() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        write(
            r,
            "system.slice/scimbridge.service/memory.max",
            "536870912\n",
        );
        write(r, "system.slice/memory.max", "max\n");
        write(r, "system.slice/other.service/memory.max", "1048576\n");
        let found = cgroup_limit("0::/system.slice/scimbridge.service\n", r);
        assert_eq!(
            found,
            Some((
                512 << 20,
                r.join("system.slice/scimbridge.service/memory.max")
            ))
        );
    }

    #[test]
    fn the_smallest_limit_on_the_way_to_the_root_applies() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        write(r, "a.slice/memory.max", "268435456\n");
        write(r, "a.slice/b.service/memory.max", "max\n");
        let found = cgroup_limit("0::/a.slice/b.service\n", r);
        assert_eq!(found, Some((256 << 20, r.join("a.slice/memory.max"))));
        assert_eq!(cgroup_limit("0::/\n", r), None, "the root has no limit");
    }

    #[test]
    fn cgroup_v1_and_a_container_whose_mount_root_is_its_own_group() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        // The container sees its own group as the mount's root, though
        // /proc/self/cgroup names it from the host's.
        write(r, "memory/memory.limit_in_bytes", "1073741824\n");
        let text = "4:memory:/process_api/af7b\n0::/\n1:cpu:/\n";
        assert_eq!(
            cgroup_limit(text, r),
            Some((1 << 30, r.join("memory/memory.limit_in_bytes")))
        );
        // Unlimited in v1 is 2^63 rounded down to a page.
        write(r, "memory/memory.limit_in_bytes", "9223372036854771712\n");
        assert_eq!(cgroup_limit(text, r), None);
    }

    #[test]
    fn garbage_and_missing_files_are_no_limit() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        write(r, "x/memory.max", "lots\n");
        assert_eq!(cgroup_limit("0::/x\n", r), None);
        assert_eq!(cgroup_limit("not a cgroup line\n", r), None);
        assert_eq!(cgroup_limit("", r), None);
    }
}
