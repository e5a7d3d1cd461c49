//! Local trust (issue 11) and file modes (issue 14 point 10), against the real
//! binary: what any command creates is 0700/0600 whatever the caller's umask; our
//! own loose files are tightened and reported; files others can write, links and
//! foreign owners are refused; root's commands on a service's directory hand their
//! files to its owner and `serve` refuses; the CLI checks who serves the control
//! socket before it sends anything; the socket works from a data directory whose
//! path is longer than `sun_path`.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use super::support::{cli, issue_token, Server};

fn mode(p: &Path) -> u32 {
    std::fs::symlink_metadata(p).unwrap().mode() & 0o7777
}

fn chmod(p: &Path, m: u32) {
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(m)).unwrap();
}

fn is_root() -> bool {
    std::fs::metadata("/proc/self").unwrap().uid() == 0
}

/// The uid of `nobody`, a user that exists on every Debian machine.
fn nobody() -> (u32, u32) {
    let out = std::process::Command::new("id")
        .args(["-u", "nobody"])
        .output()
        .unwrap();
    let uid: u32 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
    let out = std::process::Command::new("id")
        .args(["-g", "nobody"])
        .output()
        .unwrap();
    let gid: u32 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
    (uid, gid)
}

/// A data directory made by `token issue` in a fresh temporary directory.
fn bridge_with_a_token() -> (tempfile::TempDir, std::path::PathBuf) {
    let root = tempfile::tempdir().unwrap();
    let data = root.path().join("data");
    issue_token(&data, "entra", &[]);
    (root, data)
}

#[test]
fn every_command_creates_private_files() {
    let (root, data) = bridge_with_a_token();
    assert_eq!(mode(&data), 0o700);
    assert_eq!(mode(&data.join("scimbridge.redb")), 0o600);
    // Outputs written where the admin says, over an existing loose file too.
    let backup = root.path().join("backup.redb");
    std::fs::write(&backup, b"old").unwrap();
    chmod(&backup, 0o644);
    // (Replacing an existing file takes --force since the trial's item 16.)
    let (ok, _, e) = cli(
        &data,
        &["backup", "--out", backup.to_str().unwrap(), "--force"],
    );
    assert!(ok, "{e}");
    assert_eq!(mode(&backup), 0o600);
    let export = root.path().join("export.jsonl");
    let (ok, _, e) = cli(&data, &["export", "--out", export.to_str().unwrap()]);
    assert!(ok, "{e}");
    assert_eq!(mode(&export), 0o600);
    let restored = root.path().join("restored");
    let (ok, _, e) = cli(&restored, &["import", export.to_str().unwrap()]);
    assert!(ok, "{e}");
    assert_eq!(
        (mode(&restored), mode(&restored.join("scimbridge.redb"))),
        (0o700, 0o600)
    );

    // The server's own files: the generated certificate and the control socket,
    // and a backup streamed from the running server.
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start_in(dir, "test");
    let d = s.data_dir();
    for f in [
        "tls/key.pem",
        "tls/cert.pem",
        "control.sock",
        "scimbridge.redb",
    ] {
        assert_eq!(mode(&d.join(f)), 0o600, "{f}");
    }
    assert_eq!(mode(&d.join("tls")), 0o700);
    let live = root.path().join("live.redb");
    let (ok, _, e) = cli(&d, &["backup", "--out", live.to_str().unwrap()]);
    assert!(ok, "{e}");
    assert_eq!(mode(&live), 0o600);
}

#[test]
fn loose_modes_of_our_own_files_are_tightened_and_reported() {
    let (_root, data) = bridge_with_a_token();
    // What an install under umask 002 left behind.
    chmod(&data, 0o775);
    chmod(&data.join("scimbridge.redb"), 0o664);
    let (ok, stdout, stderr) = cli(&data, &["token", "list"]);
    assert!(ok, "{stderr}");
    assert!(stdout.contains("entra"));
    assert!(
        stderr.contains("tightened") && stderr.contains("scimbridge.redb"),
        "{stderr}"
    );
    assert_eq!(
        (mode(&data), mode(&data.join("scimbridge.redb"))),
        (0o700, 0o600)
    );

    // The server does the same at start, in its log.
    let mut s = Server::start();
    s.stop();
    let key = s.data_dir().join("tls/key.pem");
    chmod(&key, 0o644);
    s.restart();
    assert!(
        s.log_text().contains("tightened") && s.log_text().contains("key.pem"),
        "{}",
        s.log_text()
    );
    assert_eq!(mode(&key), 0o600);
}

#[test]
fn files_others_can_write_and_links_are_refused() {
    let (root, data) = bridge_with_a_token();
    let db = data.join("scimbridge.redb");

    chmod(&db, 0o666);
    let (ok, _, stderr) = cli(&data, &["token", "list"]);
    assert!(!ok);
    assert!(stderr.contains("can be written by every user"), "{stderr}");
    assert_eq!(
        mode(&db),
        0o666,
        "a refused file is left for the admin to inspect"
    );
    chmod(&db, 0o600);

    chmod(&data, 0o777);
    let (ok, _, stderr) = cli(&data, &["token", "issue", "--name", "x"]);
    assert!(!ok);
    assert!(stderr.contains("chmod go-w"), "{stderr}");
    chmod(&data, 0o700);

    // A link where the database must be: the server refuses to start.
    let elsewhere = root.path().join("elsewhere.redb");
    std::fs::rename(&db, &elsewhere).unwrap();
    std::os::unix::fs::symlink(&elsewhere, &db).unwrap();
    let (ok, _, stderr) = cli(&data, &["token", "list"]);
    assert!(!ok);
    assert!(stderr.contains("symbolic link"), "{stderr}");
    let out = std::process::Command::new(super::support::BIN)
        .arg("--data-dir")
        .arg(&data)
        .args(["serve", "--listen", "127.0.0.1:0"])
        .env_remove("SCIMBRIDGE_CONFIG")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("symbolic link"));
}

/// A data directory `service` (mode 0700) owned by `nobody`, as the package's
/// service user owns /var/lib/scimbridge, inside a root-owned temporary directory
/// (mode 0755); with nobody's uid and gid. Needs root (CI runs as root).
fn service_directory() -> (tempfile::TempDir, std::path::PathBuf, u32, u32) {
    if !is_root() {
        panic!("this test needs root (CI runs as root): it switches file owners");
    }
    let (uid, gid) = nobody();
    let root = tempfile::tempdir().unwrap();
    chmod(root.path(), 0o755);
    let data = root.path().join("service");
    std::fs::create_dir(&data).unwrap();
    chmod(&data, 0o700);
    std::os::unix::fs::chown(&data, Some(uid), Some(gid)).unwrap();
    (root, data, uid, gid)
}

/// A copy of the binary that `nobody` can run wherever the checkout lives, in
/// `root` (a directory nobody can enter).
fn binary_for_nobody(root: &Path) -> std::path::PathBuf {
    let bin = root.join("scimbridge");
    std::fs::copy(super::support::BIN, &bin).unwrap();
    chmod(&bin, 0o755);
    bin
}

/// `bin` as `nobody` by the process's own uid (not runuser, whose child a kill
/// misses), without a configuration file from the environment.
fn as_nobody(bin: &Path, uid: u32, gid: u32) -> std::process::Command {
    let mut c = std::process::Command::new(bin);
    std::os::unix::process::CommandExt::uid(&mut c, uid);
    std::os::unix::process::CommandExt::gid(&mut c, gid);
    c.env_remove("SCIMBRIDGE_CONFIG");
    c
}

/// Runs `cmd --data-dir DIR ARGS` (no configuration file from the environment),
/// which must fail; its stderr.
fn refused(mut cmd: std::process::Command, dir: &Path, args: &[&str]) -> String {
    let out = cmd
        .arg("--data-dir")
        .arg(dir)
        .args(args)
        .env_remove("SCIMBRIDGE_CONFIG")
        .output()
        .unwrap();
    assert!(!out.status.success());
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// As root (the Debian package's admin) on a directory owned by a service user:
/// files the CLI creates go to that user, `serve` refuses, and a control socket that
/// someone other than that user serves is not trusted.
#[test]
fn root_on_a_service_directory() {
    let (root, data, uid, gid) = service_directory();

    // token issue as root creates the database for the service user.
    issue_token(&data, "entra", &[]);
    let db = data.join("scimbridge.redb");
    assert_eq!(
        (std::fs::metadata(&db).unwrap().uid(), mode(&db)),
        (uid, 0o600)
    );

    // serve as root refuses, and says why and what to run instead.
    let out = std::process::Command::new(super::support::BIN)
        .arg("--data-dir")
        .arg(&data)
        .args(["serve", "--listen", "127.0.0.1:0"])
        .env_remove("SCIMBRIDGE_CONFIG")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("refusing to serve as root") && stderr.contains("runuser -u nobody"),
        "{stderr}"
    );
    assert!(
        !data.join("tls").exists(),
        "serve created files before refusing"
    );

    // The service user's CLI finds a socket in its directory served by another
    // user (here root): it refuses before it sends the push target's token.
    let sock = data.join("control.sock");
    let listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
    chmod(&sock, 0o777);
    let catcher = std::thread::spawn(move || {
        use std::io::Read;
        let (mut conn, _) = listener.accept().unwrap();
        let mut got = Vec::new();
        let _ = conn.read_to_end(&mut got);
        got
    });
    let token_file = root.path().join("target-token");
    std::fs::write(&token_file, "the-target-secret").unwrap();
    std::os::unix::fs::chown(&token_file, Some(uid), Some(gid)).unwrap();
    let bin = binary_for_nobody(root.path());
    let out = std::process::Command::new("runuser")
        .args(["-u", "nobody", "--"])
        .arg(&bin)
        .arg("--data-dir")
        .arg(&data)
        .args([
            "migrate",
            "push",
            "--to",
            "https://127.0.0.1:9/scim/v2",
            "--token-file",
        ])
        .arg(&token_file)
        .env_remove("SCIMBRIDGE_CONFIG")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("refusing to use the control socket")
            && stderr.contains("nothing was sent"),
        "{stderr}"
    );
    let got = catcher.join().unwrap();
    assert!(
        got.is_empty(),
        "the CLI sent {} bytes to an untrusted socket",
        got.len()
    );
}

/// The trial: a backup restored with `cp` as root left `scimbridge.redb` owned by
/// root in the service user's directory; the error advised running as root, which
/// fails the same way. The advice is now the one that works: `chown -R USER: DIR`
/// (or `install -o` for a restore), whoever runs it; and a directory owned by root
/// is given to the user running scimbridge rather than run as root.
#[test]
fn a_file_restored_as_root_is_refused_with_the_chown_that_fixes_it() {
    let (root, data, uid, gid) = service_directory();
    issue_token(&data, "entra", &[]);
    // The restore: a copy made by root keeps root as its owner.
    let db = data.join("scimbridge.redb");
    let backup = root.path().join("backup.redb");
    std::fs::copy(&db, &backup).unwrap();
    std::fs::remove_file(&db).unwrap();
    std::fs::copy(&backup, &db).unwrap();
    assert_eq!(std::fs::metadata(&db).unwrap().uid(), 0);
    let bin = binary_for_nobody(root.path());
    let as_nobody = || as_nobody(&bin, uid, gid);
    let serve = |nobody: bool| {
        let cmd = if nobody {
            as_nobody()
        } else {
            std::process::Command::new(&bin)
        };
        refused(cmd, &data, &["serve", "--listen", "127.0.0.1:0"])
    };
    let fix = format!("chown -R nobody: {}", data.display());
    // As the service user, and as root (which the old advice suggested): the same
    // remedy, never "run as root".
    for who in [true, false] {
        let err = serve(who);
        assert!(
            err.contains(&format!("{} belongs to root", db.display()))
                && err.contains(&fix)
                && err.contains("install -o nobody")
                && !err.contains("runuser -u root"),
            "as nobody {who}: {err}"
        );
    }
    // Following it works: the server starts as the service user.
    std::os::unix::fs::chown(&db, Some(uid), Some(gid)).unwrap();
    let mut child = as_nobody()
        .arg("--data-dir")
        .arg(&data)
        .args(["serve", "--listen", "127.0.0.1:0"])
        .env_remove("SCIMBRIDGE_CONFIG")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let started = std::io::BufRead::lines(std::io::BufReader::new(stderr))
        .map_while(Result::ok)
        .any(|l| l.contains("SCIM URL for your identity provider"));
    let _ = child.kill();
    let _ = child.wait();
    assert!(started, "the server did not start after the chown");

    // A directory owned by root, run as the service user: give it to that user;
    // running as root is not offered.
    let rooted = root.path().join("rooted");
    std::fs::create_dir(&rooted).unwrap();
    chmod(&rooted, 0o700);
    let err = refused(as_nobody(), &rooted, &["serve", "--listen", "127.0.0.1:0"]);
    assert!(
        err.contains("belongs to root, not to nobody")
            && err.contains(&format!("chown -R nobody: {}", rooted.display()))
            && !err.contains("run scimbridge as root"),
        "{err}"
    );
}

#[test]
fn the_control_socket_works_from_a_long_data_directory() {
    let dir = tempfile::Builder::new()
        .prefix(&"a-data-directory-with-a-long-name-".repeat(4))
        .tempdir()
        .unwrap();
    assert!(dir.path().join("control.sock").as_os_str().len() > 108);
    let s = Server::start_in(dir, "test");
    // Issued through the running server's socket (the database is held by it).
    let (ok, stdout, stderr) = cli(&s.data_dir(), &["token", "issue", "--name", "second"]);
    assert!(ok, "{stderr}");
    let secret = stdout.trim().to_owned();
    let r = s.client().with_token(&secret).get("/Users");
    assert_eq!(r.status, 200);
    assert!(!s.log_text().contains("control socket is not available"));
}

/// Trial 7 item 1: as `nobody`, a command on root's 0700 data directory said "no
/// scimbridge database at …" (it could not look inside); it says whose directory it
/// is and the `chown`, as `serve` does. A data directory nobody may create named
/// the IO error twice ("Permission denied (os error 13): Permission denied (os
/// error 13)"); it is said once, with the directory that refused and its owner.
#[test]
fn a_command_on_a_directory_it_may_not_read_names_the_owner() {
    let (root, _service, uid, gid) = service_directory();
    let bin = binary_for_nobody(root.path());
    let restored = root.path().join("restored");
    issue_token(&restored, "entra", &[]);
    assert_eq!(mode(&restored), 0o700);
    let err = refused(as_nobody(&bin, uid, gid), &restored, &["token", "list"]);
    assert!(
        err.contains("belongs to root, not to nobody")
            && err.contains(&format!("chown -R nobody: {}", restored.display()))
            && !err.contains("no scimbridge database"),
        "{err}"
    );

    let unmade = restored.join("sub").join("data");
    let err = refused(
        as_nobody(&bin, uid, gid),
        &unmade,
        &["token", "issue", "--name", "okta"],
    );
    assert_eq!(err.matches("Permission denied").count(), 1, "{err}");
    assert!(
        err.contains(&format!(
            "{} belongs to root with mode 700",
            restored.display()
        )),
        "{err}"
    );
}
