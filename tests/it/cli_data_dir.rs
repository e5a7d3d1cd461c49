//! The CLI against the data directory (issue 14 points 1 and 10): only `serve`,
//! `import` and `token issue` may create a database (`token issue` says so on
//! stderr); every other command refuses a missing one, naming the path it looked at,
//! and leaves nothing behind.

use std::path::Path;
use std::process::Command;

use super::support::{cli, BIN};

/// Every command that needs existing data, with the arguments it needs to get as
/// far as the database.
fn refusing_commands(files: &Path) -> Vec<Vec<String>> {
    let token_file = files.join("target-token");
    std::fs::write(&token_file, "secret-of-the-target\n").unwrap();
    let f = |p: &str| files.join(p).display().to_string();
    let tf = token_file.display().to_string();
    [
        vec!["token", "list"],
        vec!["token", "list", "--json"],
        vec!["token", "revoke", "entra"],
        vec!["token", "revoke", "entra", "--superseded", "--yes"],
        vec!["token", "rotate", "entra"],
        vec!["migrate", "check"],
        vec!["migrate", "status"],
        vec!["migrate", "verify"],
        vec!["migrate", "abort"],
        vec!["migrate", "cutover", "--confirm-irreversible"],
        vec![
            "migrate",
            "push",
            "--to",
            "https://127.0.0.1:9/scim/v2",
            "--token-file",
            &tf,
        ],
        vec!["export", "--out", &f("export.jsonl")],
        vec!["backup", "--out", &f("backup.redb")],
        vec!["admin", "reset-password"],
        vec!["admin", "reset-password", "bob"],
        vec!["admin", "add", "bob"],
        vec!["admin", "remove", "bob"],
        vec!["admin", "list"],
    ]
    .into_iter()
    .map(|a| a.into_iter().map(str::to_owned).collect())
    .collect()
}

#[test]
fn commands_refuse_a_missing_data_directory_naming_the_path() {
    let root = tempfile::tempdir().unwrap();
    let files = tempfile::tempdir().unwrap();
    let missing = root.path().join("no-such-dir");
    for args in refusing_commands(files.path()) {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let (ok, stdout, stderr) = cli(&missing, &args);
        assert!(
            !ok,
            "{args:?} succeeded on a missing data directory: {stdout}"
        );
        let db = missing.join("scimbridge.redb");
        assert!(
            stderr.contains(&db.display().to_string()) && stderr.contains("does not exist"),
            "{args:?} does not name {}: {stderr}",
            db.display()
        );
        assert!(!missing.exists(), "{args:?} created {}", missing.display());
    }
    // Nothing half-written next to the outputs either.
    let left: Vec<_> = std::fs::read_dir(files.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(left, vec!["target-token".to_owned()]);
}

#[test]
fn commands_refuse_a_data_directory_without_a_database() {
    let root = tempfile::tempdir().unwrap();
    let files = tempfile::tempdir().unwrap();
    let empty = root.path().join("data");
    std::fs::create_dir(&empty).unwrap();
    for args in refusing_commands(files.path()) {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let (ok, _, stderr) = cli(&empty, &args);
        assert!(!ok, "{args:?} succeeded on an empty data directory");
        assert!(stderr.contains("holds no database"), "{args:?}: {stderr}");
        assert!(
            !empty.join("scimbridge.redb").exists(),
            "{args:?} created a database"
        );
    }
}

#[test]
fn token_issue_creates_the_database_and_says_where() {
    let root = tempfile::tempdir().unwrap();
    let data = root.path().join("new");
    let (ok, stdout, stderr) = cli(&data, &["token", "issue", "--name", "entra"]);
    assert!(ok, "{stderr}");
    let db = data.join("scimbridge.redb");
    assert!(db.exists());
    assert!(
        stderr.contains("created a new database") && stderr.contains(&db.display().to_string()),
        "{stderr}"
    );
    assert!(stdout.trim().starts_with("scimb_"));
    // The second token goes into the same database, without the notice.
    let (ok, _, stderr) = cli(&data, &["token", "issue", "--name", "okta"]);
    assert!(ok && !stderr.contains("created a new database"), "{stderr}");
    let (ok, stdout, _) = cli(&data, &["token", "list"]);
    assert!(
        ok && stdout.contains("entra") && stdout.contains("okta"),
        "{stdout}"
    );
    // `--quiet` is quiet even when it creates the database: the token alone on stdout,
    // nothing on stderr (README), and the database is there for the server.
    let data = root.path().join("scripted");
    let (ok, stdout, stderr) = cli(&data, &["token", "issue", "--name", "ci", "-q"]);
    assert!(ok, "{stderr}");
    assert!(stderr.is_empty(), "{stderr}");
    assert_eq!(stdout.lines().count(), 1, "{stdout}");
    assert!(stdout.starts_with("scimb_"), "{stdout}");
    assert!(data.join("scimbridge.redb").exists());
}

/// The entries of `dir`, sorted (`None`: it does not exist).
fn entries(dir: &Path) -> Option<Vec<String>> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .ok()?
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    Some(names)
}

/// The trial: `--data-dir NEWDIR token issue --name "entra id"` was refused for its
/// name, but left NEWDIR with an empty database that later commands took for a bridge.
/// What can be refused without the data is refused before anything is created: the
/// directory (and the parents it lacked) stays absent, an existing empty one stays
/// empty, and the refusal names the rule.
#[test]
fn a_refused_token_issue_creates_nothing() {
    let root = tempfile::tempdir().unwrap();
    let empty = root.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let refused: [(&[&str], &str); 5] = [
        (&["--name", "entra id"], "a token name is"),
        (&["--name=-x"], "a token name is"),
        (&["--name", "entra", "--expires-in", "0"], "lifetime"),
        (&["--name", "entra", "--expires-in", "3651"], "lifetime"),
        (&["--name", "entra", "--expires-in", "ten"], "invalid value"),
    ];
    for (flags, why) in refused {
        for data in [
            root.path().join("new"),
            root.path().join("a/b/c"),
            empty.clone(),
        ] {
            let args: Vec<&str> = ["token", "issue"].iter().chain(flags).copied().collect();
            let (ok, stdout, stderr) = cli(&data, &args);
            assert!(!ok, "{args:?} succeeded: {stdout}");
            assert!(stderr.contains(why), "{args:?}: {stderr}");
            assert!(!stderr.contains("created a new database"), "{stderr}");
            assert!(stdout.is_empty(), "no secret printed: {stdout}");
            let left = entries(&data);
            if data == empty {
                assert_eq!(left, Some(vec![]), "{args:?} wrote into {}", data.display());
            } else {
                assert_eq!(left, None, "{args:?} created {}", data.display());
            }
        }
        assert_eq!(entries(root.path()), Some(vec!["empty".to_owned()]));
    }
    // The same name, fixed, is issued there (the checks refuse only what is wrong).
    let (ok, stdout, stderr) = cli(&empty, &["token", "issue", "--name", "entra-id"]);
    assert!(ok && stdout.starts_with("scimb_"), "{stderr}");
}

/// A refused `import` into a new data directory leaves neither the empty database
/// nor the directory it made (the file is read only after the database is open, so
/// what was created is taken away again).
#[test]
fn a_refused_import_into_a_new_directory_leaves_nothing() {
    let root = tempfile::tempdir().unwrap();
    let file = root.path().join("not-an-export.jsonl");
    std::fs::write(&file, "this is not an export\n").unwrap();
    let data = root.path().join("new/data");
    let (ok, _, stderr) = cli(&data, &["import", file.to_str().unwrap()]);
    assert!(!ok && stderr.contains("not a valid export"), "{stderr}");
    assert_eq!(
        entries(&root.path().join("new")),
        None,
        "the directories are gone"
    );
    assert_eq!(
        entries(root.path()),
        Some(vec!["not-an-export.jsonl".to_owned()])
    );
}

#[test]
fn import_creates_the_database() {
    let root = tempfile::tempdir().unwrap();
    let source = root.path().join("source");
    super::support::issue_token(&source, "entra", &[]);
    let file = root.path().join("export.jsonl");
    let (ok, _, stderr) = cli(&source, &["export", "--out", file.to_str().unwrap()]);
    assert!(ok, "{stderr}");
    let target = root.path().join("restored");
    let (ok, stdout, stderr) = cli(&target, &["import", file.to_str().unwrap()]);
    assert!(ok, "{stderr}");
    assert!(stdout.contains("imported 0 users"), "{stdout}");
    assert!(target.join("scimbridge.redb").exists());
}

#[test]
fn check_config_creates_nothing() {
    let root = tempfile::tempdir().unwrap();
    let data = root.path().join("data");
    let (ok, stdout, stderr) = cli(&data, &["check-config"]);
    assert!(ok, "{stderr}");
    assert!(stdout.contains("configuration OK"), "{stdout}");
    assert!(!data.exists());
}

/// `token list` run in `cwd` with nothing naming the data.
fn token_list_in(cwd: &Path) -> std::process::Output {
    Command::new(BIN)
        .args(["token", "list"])
        .current_dir(cwd)
        .env_remove("SCIMBRIDGE_CONFIG")
        .env_remove("SCIMBRIDGE_DATA_DIR")
        .output()
        .unwrap()
}

/// Without --config, --data-dir or their variables, a command run where there is no
/// ./scimbridge-data names the default path it looked at (or, on a machine with the
/// package installed, says it uses the packaged configuration).
#[test]
fn without_flags_the_default_path_is_named() {
    let cwd = tempfile::tempdir().unwrap();
    let out = token_list_in(cwd.path());
    let stderr = String::from_utf8_lossy(&out.stderr);
    if Path::new("/etc/scimbridge/scimbridge.toml").exists() {
        assert!(
            stderr.contains("using the packaged configuration"),
            "{stderr}"
        );
    } else {
        assert!(!out.status.success());
        assert!(
            stderr.contains("./scimbridge-data/scimbridge.redb"),
            "{stderr}"
        );
    }
    assert!(!cwd.path().join("scimbridge-data").exists());
    // With ./scimbridge-data present the packaged configuration is never read.
    std::fs::create_dir(cwd.path().join("scimbridge-data")).unwrap();
    let out = token_list_in(cwd.path());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(!stderr.contains("using the packaged"), "{stderr}");
    assert!(stderr.contains("holds no database"), "{stderr}");
}

/// The trial: `scimbridge migrate status | head -1` panicked with "failed printing
/// to stdout: Broken pipe" and a backtrace. A reader closing the pipe early ends the
/// command quietly (exit 141, as SIGPIPE would), and the command still works whole.
#[test]
fn a_reader_closing_stdout_early_ends_the_command_quietly() {
    let data = tempfile::tempdir().unwrap();
    for n in 0..3 {
        let (ok, _, stderr) = cli(
            data.path(),
            &["token", "issue", "--name", &format!("idp-{n}")],
        );
        assert!(ok, "{stderr}");
    }
    let (ok, whole, _) = cli(data.path(), &["token", "list"]);
    assert!(ok && whole.contains("idp-2"), "{whole}");
    // The reader is gone before the command starts, so its first line meets a closed
    // pipe. Closing the test's own read end after the spawn raced the command (it
    // could print into the pipe first, exit 0; and another test's fork could hold a
    // copy of the read end). The pipe is made in the child, between fork and exec, and
    // its read end closed there: no process ever reads from it.
    let mut cmd = Command::new(BIN);
    cmd.arg("--data-dir")
        .arg(data.path())
        .args(["token", "list"])
        .env("RUST_BACKTRACE", "1")
        .env_remove("SCIMBRIDGE_CONFIG")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    // SAFETY: the closure runs in the forked child and calls only pipe, dup2 and close,
    // which are async-signal-safe, on descriptors it made itself.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(&mut cmd, || {
            let mut fds = [0 as libc::c_int; 2];
            if libc::pipe(fds.as_mut_ptr()) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            libc::close(fds[0]);
            if libc::dup2(fds[1], libc::STDOUT_FILENO) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            libc::close(fds[1]);
            Ok(())
        });
    }
    let out = cmd.output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(out.status.code(), Some(141), "{stderr}");
}

/// The trial: `SCIMBRIDGE_DATA_DIR=` (set but empty, as a unit file's
/// `Environment=SCIMBRIDGE_DATA_DIR=` leaves it) made every command fail with "a value
/// is required for '--data-dir'", even with `--data-dir` given. An empty variable is
/// unset: the flag wins, and without the flag the default path is used.
#[test]
fn an_empty_data_dir_variable_counts_as_unset_and_the_flag_wins() {
    let data = tempfile::tempdir().unwrap();
    let (ok, _, stderr) = cli(data.path(), &["token", "issue", "--name", "entra"]);
    assert!(ok, "{stderr}");
    let run = |cwd: &Path, before: &[&str], after: &[&str]| {
        Command::new(BIN)
            .args(before)
            .args(["token", "list"])
            .args(after)
            .current_dir(cwd)
            .env("SCIMBRIDGE_DATA_DIR", "")
            .env("SCIMBRIDGE_CONFIG", "")
            .output()
            .unwrap()
    };
    let dir = data.path().to_str().unwrap();
    let cwd = tempfile::tempdir().unwrap();
    for (before, after) in [
        (vec!["--data-dir", dir], vec![]),
        (vec![], vec!["--data-dir", dir]),
    ] {
        let out = run(cwd.path(), &before, &after);
        let (stdout, stderr) = (
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
        );
        assert!(
            out.status.success() && stdout.contains("entra"),
            "{before:?} {after:?}: {stdout}{stderr}"
        );
    }
    // Without the flag: the default ./scimbridge-data, as if the variable were unset
    // (here it holds no database, and the message says so).
    std::fs::create_dir(cwd.path().join("scimbridge-data")).unwrap();
    let out = run(cwd.path(), &[], &[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        !stderr.contains("a value is required") && stderr.contains("holds no database"),
        "{stderr}"
    );
}
