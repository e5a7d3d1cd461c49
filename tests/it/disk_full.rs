//! Disk full (issue 11): the data directory lives on a small tmpfs (mounted by the
//! test, which runs as root like CI) that a file fills while concurrent writers
//! create users. Writes are refused with a SCIM error (507, never a 500 or a dropped
//! connection), reads go on, `/metrics` and the log say why, writing resumes by
//! itself when the space returns, and after a restart every acknowledged write is
//! there, by id and by a `userName eq` filter.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::support::*;

const WRITERS: usize = 3;
/// Bounds each writer whatever happens: acknowledged writes, and time.
const MAX_WRITES: usize = 600;
const WRITER_DEADLINE: Duration = Duration::from_secs(120);

/// A tmpfs of `size` mounted inside a temporary directory; unmounted on drop (after
/// the server that uses it has been dropped, as locals drop in reverse order).
struct Tmpfs {
    mountpoint: PathBuf,
    _outer: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(size: &str) -> Tmpfs {
        let outer = tempfile::tempdir().expect("tempdir");
        let mountpoint = outer.path().join("disk");
        std::fs::create_dir(&mountpoint).unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size},mode=0700")])
            .arg("tmpfs")
            .arg(&mountpoint)
            .output()
            .expect("run mount");
        assert!(
            out.status.success(),
            "this test mounts a small tmpfs and must run as root (as CI does): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Tmpfs {
            mountpoint,
            _outer: outer,
        }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .arg("-l")
            .arg(&self.mountpoint)
            .status();
    }
}

/// Writes a file until the filesystem has no space left; returns its path.
fn fill(dir: &Path) -> PathBuf {
    let path = dir.join("filler");
    let mut f = std::fs::File::create(&path).expect("create the filler");
    for chunk in [1 << 16, 4096, 512] {
        let block = vec![0x5a_u8; chunk];
        loop {
            match f.write_all(&block) {
                Ok(()) => {}
                Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => break,
                Err(e) => panic!("filling the disk: {e}"),
            }
        }
    }
    let _ = f.sync_all();
    path
}

#[derive(Default)]
struct Tally {
    /// (id, userName) of every acknowledged create.
    acked: Mutex<Vec<(String, String)>>,
    /// Acknowledged creates after the filler was removed.
    after_free: AtomicUsize,
    refused: AtomicUsize,
    /// The first refusal's body.
    refusal: Mutex<Option<Value>>,
    /// Anything else: status and body (must stay empty).
    unexpected: Mutex<Vec<String>>,
}

fn writer(c: Client, w: usize, stop: Arc<AtomicBool>, freed: Arc<AtomicBool>, t: Arc<Tally>) {
    let started = Instant::now();
    let mut acked = 0;
    let mut n = 0;
    // A value near the attribute length limit makes each user a few KB, so the
    // disk fills after a few hundred writes rather than thousands.
    let title = "t".repeat(3000);
    while !stop.load(Ordering::Acquire) && acked < MAX_WRITES && started.elapsed() < WRITER_DEADLINE
    {
        n += 1;
        let name = format!("w{w}-{n}@example.com");
        let was_freed = freed.load(Ordering::Acquire);
        let r = c.post(
            "/Users",
            &json!({"userName": name, "title": title, "emails": [{"value": name}]}),
        );
        match r.status {
            201 => {
                acked += 1;
                let id = r.json()["id"].as_str().unwrap().to_owned();
                t.acked.lock().unwrap().push((id, name));
                if was_freed {
                    t.after_free.fetch_add(1, Ordering::AcqRel);
                }
            }
            507 => {
                t.refused.fetch_add(1, Ordering::AcqRel);
                t.refusal.lock().unwrap().get_or_insert_with(|| r.json());
                // Refusals come fast; there is nothing to gain from spinning.
                std::thread::sleep(Duration::from_millis(20));
            }
            _ => t.unexpected.lock().unwrap().push(format!(
                "{} {}",
                r.status,
                String::from_utf8_lossy(&r.body)
            )),
        }
    }
}

fn metric(c: &Client, name: &str) -> String {
    let r = c.send("GET", "/metrics", &[], None);
    assert_eq!(r.status, 200);
    String::from_utf8_lossy(&r.body)
        .lines()
        .find(|l| l.starts_with(name))
        .unwrap_or_else(|| panic!("no {name} in /metrics"))
        .to_owned()
}

#[test]
fn a_full_disk_refuses_writes_keeps_reads_and_loses_nothing() {
    let disk = Tmpfs::mount("12m");
    let data = tempfile::tempdir_in(&disk.mountpoint).unwrap();
    let mut s = Server::start_in(data, "test");
    let c = s.client();
    let first = c.post("/Users", &user_body("before@example.com"));
    assert_eq!(first.status, 201);
    let first = first.json()["id"].as_str().unwrap().to_owned();
    assert_eq!(
        metric(&c, "scimbridge_storage_disk_full "),
        "scimbridge_storage_disk_full 0"
    );

    let stop = Arc::new(AtomicBool::new(false));
    let freed = Arc::new(AtomicBool::new(false));
    let tally = Arc::new(Tally::default());
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let (c, stop, freed, t) = (s.client(), stop.clone(), freed.clone(), tally.clone());
            std::thread::spawn(move || writer(c, w, stop, freed, t))
        })
        .collect();
    wait_until("the writers get going", Duration::from_secs(30), || {
        (tally.acked.lock().unwrap().len() >= 10).then_some(())
    });
    let filler = fill(&disk.mountpoint);
    wait_until(
        "a write refused for the full disk",
        Duration::from_secs(60),
        || (tally.refused.load(Ordering::Acquire) > 0).then_some(()),
    );

    // The refusal is a SCIM error that says what happened.
    let refusal = tally.refusal.lock().unwrap().clone().unwrap();
    assert_eq!(refusal["status"], "507", "{refusal}");
    assert!(
        refusal["schemas"][0]
            .as_str()
            .is_some_and(|s| s.ends_with(":api:messages:2.0:Error")),
        "{refusal}"
    );
    assert!(refusal["detail"].as_str().unwrap().contains("disk is full"));
    // Reads go on while the disk is full: by id and through the index.
    assert_eq!(c.get(&format!("/Users/{first}")).status, 200);
    let found = c.get("/Users?filter=userName%20eq%20%22before@example.com%22");
    assert_eq!(
        found.status,
        200,
        "{}",
        String::from_utf8_lossy(&found.body)
    );
    assert_eq!(found.json()["totalResults"], 1);
    let one_acked = tally.acked.lock().unwrap()[0].0.clone();
    assert_eq!(c.get(&format!("/Users/{one_acked}")).status, 200);
    // The gauge says whether the last write failed for space. A commit that fits in
    // pages redb freed inside its file can still succeed on the full disk and clear
    // it for a moment, so it is polled, not read once.
    wait_until(
        "scimbridge_storage_disk_full 1 in /metrics",
        Duration::from_secs(30),
        || {
            (metric(&c, "scimbridge_storage_disk_full ") == "scimbridge_storage_disk_full 1")
                .then_some(())
        },
    );
    s.wait_for_log("the disk holding the database is full");
    // A write tried again after the back-off fails too, and the store survives
    // that as well (each failure reopens the database).
    wait_until(
        "a second failed attempt on the full disk",
        Duration::from_secs(30),
        || {
            let line = metric(
                &c,
                "scimbridge_storage_write_failures_total{kind=\"disk_full\"}",
            );
            let n: u64 = line.rsplit(' ').next()?.parse().ok()?;
            (n >= 2).then_some(())
        },
    );
    assert_eq!(c.get(&format!("/Users/{first}")).status, 200);

    // Space returns: writing resumes by itself.
    std::fs::remove_file(&filler).unwrap();
    freed.store(true, Ordering::Release);
    wait_until(
        "writes resume after the space returns",
        Duration::from_secs(60),
        || (tally.after_free.load(Ordering::Acquire) >= 5).then_some(()),
    );
    stop.store(true, Ordering::Release);
    for w in writers {
        w.join().expect("writer panicked");
    }
    let unexpected = tally.unexpected.lock().unwrap().clone();
    assert!(
        unexpected.is_empty(),
        "answers other than 201/507: {unexpected:?}"
    );
    assert_eq!(
        metric(&c, "scimbridge_storage_disk_full "),
        "scimbridge_storage_disk_full 0"
    );
    s.wait_for_log("writes resumed");

    // Nothing acknowledged was lost, and the indexes agree, after a restart.
    s.restart();
    let c = s.client();
    let acked = tally.acked.lock().unwrap().clone();
    for (uid, name) in &acked {
        let r = c.get(&format!("/Users/{uid}"));
        assert_eq!(r.status, 200, "acknowledged user {name} lost");
        let r = c.get(&format!(
            "/Users?filter=userName%20eq%20%22{name}%22&attributes=userName"
        ));
        assert_eq!(r.json()["totalResults"], 1, "{name} not found by filter");
    }
    let total = c.get("/Users?count=0").json()["totalResults"]
        .as_u64()
        .unwrap();
    assert_eq!(total as usize, acked.len() + 1);
    println!(
        "disk full: {} writes acknowledged ({} after the space returned), {} refused with 507",
        acked.len(),
        tally.after_free.load(Ordering::Acquire),
        tally.refused.load(Ordering::Acquire)
    );
}
