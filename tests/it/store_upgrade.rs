//! Upgrading what an older release wrote, end to end: the real binary started on a
//! database file written by the format-1 release (`tests/fixtures/format1/`, with the
//! script that made it), and `import` of that release's export file. The store's unit
//! tests check each upgrade step; these check what a user sees afterwards over TLS.

use std::path::Path;

use serde_json::Value;

use crate::support::admin::{get_page, login_as, login_as_response, text};
use crate::support::{cli, Server};

fn fixture(name: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn users_named(c: &crate::support::Client, name: &str) -> Value {
    let filter: String =
        form_urlencoded::byte_serialize(format!("userName eq \"{name}\"").as_bytes()).collect();
    let r = c.get(&format!("/Users?filter={filter}"));
    assert_eq!(r.status, 200);
    r.json()
}

#[test]
fn a_format_1_database_is_upgraded_at_start_and_keeps_working() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("scimbridge.redb");
    std::fs::copy(fixture("format1/format1.redb"), &db).unwrap();
    // The first command that opens the database upgrades it, and says so.
    let (ok, _, stderr) = cli(dir.path(), &["token", "list"]);
    assert!(ok, "{stderr}");
    assert!(
        stderr.contains("upgraded the database from format 1 to 6")
            && stderr.contains("format1-backup")
            && stderr.contains("repaired:"),
        "{stderr}"
    );
    let backup = dir.path().join("scimbridge.redb.format1-backup");
    assert!(backup.exists());
    let mut s = Server::start_in(dir, "after-upgrade");
    let c = s.client();
    // The token the format-1 release issued still authenticates.
    let old_token = std::fs::read_to_string(fixture("format1/token.txt")).unwrap();
    let old = c.with_token(old_token.trim());
    assert_eq!(old.get("/Users").json()["totalResults"], 5);
    // Caseless userNames: both spellings find the one the index kept.
    let upper = users_named(&c, "STRASSE@example.com");
    assert_eq!(upper["totalResults"], 1);
    assert_eq!(
        users_named(&c, "straße@example.com")["Resources"][0]["id"],
        upper["Resources"][0]["id"]
    );
    // The repaired user has one primary email.
    let two = users_named(&c, "two.primaries@example.com");
    let emails = two["Resources"][0]["emails"].as_array().unwrap();
    assert_eq!(emails.iter().filter(|e| e["primary"] == true).count(), 1);
    // Nested groups written by format 1 show as indirect memberships.
    let alice = users_named(&c, "alice@example.com");
    let kinds: Vec<&str> = alice["Resources"][0]["groups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["type"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["direct", "indirect"]);
    // New writes follow the new rules.
    let r = c.post(
        "/Users",
        &serde_json::json!({"userName": "Alice@EXAMPLE.com"}),
    );
    assert_eq!(r.status, 409);
    s.stop();
}

#[test]
fn a_format_1_export_is_imported_and_its_repairs_are_reported() {
    let dir = tempfile::tempdir().unwrap();
    let (ok, stdout, stderr) = cli(
        dir.path(),
        &["import", fixture("format1/format1.jsonl").to_str().unwrap()],
    );
    assert!(ok, "{stderr}");
    assert!(
        stdout.contains("imported 5 users, 2 groups and 2 memberships"),
        "{stdout}"
    );
    assert!(
        stderr.contains("repaired:") && stderr.contains("primary"),
        "{stderr}"
    );
    assert!(stderr.contains("STRASSE@example.com"), "{stderr}");
}

#[test]
fn a_format_2_database_shows_member_names_from_its_rows_and_follows_renames() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        fixture("format2/format2.redb"),
        dir.path().join("scimbridge.redb"),
    )
    .unwrap();
    let (ok, _, stderr) = cli(dir.path(), &["token", "list"]);
    assert!(ok, "{stderr}");
    assert!(
        stderr.contains("upgraded the database from format 2 to 6"),
        "{stderr}"
    );
    assert!(dir.path().join("scimbridge.redb.format2-backup").exists());
    let mut s = Server::start_in(dir, "after-upgrade");
    // The token the format-2 release issued still authenticates.
    let token = std::fs::read_to_string(fixture("format2/token.txt")).unwrap();
    let c = s.client().with_token(token.trim());
    let filter: String = form_urlencoded::byte_serialize(b"displayName eq \"Shown\"").collect();
    let shown = |c: &crate::support::Client| -> Vec<String> {
        let page = c.get(&format!("/Groups?filter={filter}")).json();
        let mut names: Vec<String> = page["Resources"][0]["members"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["display"].as_str().unwrap().to_owned())
            .collect();
        names.sort();
        names
    };
    assert_eq!(shown(&c), ["Alice from Okta", "bob@example.com"]);
    // Renaming a member shows at once; the display the client gave stays.
    let bob = users_named(&c, "bob@example.com")["Resources"][0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let alice = users_named(&c, "alice@example.com")["Resources"][0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let rename = |id: &str, name: &str| {
        let body = serde_json::json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
            "Operations": [{"op": "replace", "path": "displayName", "value": name}]});
        assert_eq!(c.patch(&format!("/Users/{id}"), &body).status, 200);
    };
    rename(&bob, "Bob Builder");
    rename(&alice, "Alice Liddell");
    assert_eq!(shown(&c), ["Alice from Okta", "Bob Builder"]);
    s.stop();
}

#[test]
fn a_format_3_admin_password_signs_in_as_admin_after_the_upgrade() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        fixture("format3/format3.redb"),
        dir.path().join("scimbridge.redb"),
    )
    .unwrap();
    // `admin list` is the first command: it upgrades, and shows the account.
    let (ok, stdout, stderr) = cli(dir.path(), &["admin", "list"]);
    assert!(ok, "{stderr}");
    assert!(
        stderr.contains("upgraded the database from format 3 to 6"),
        "{stderr}"
    );
    assert!(stdout.lines().any(|l| l.starts_with("admin ")), "{stdout}");
    assert!(dir.path().join("scimbridge.redb.format3-backup").exists());
    let mut s = Server::start_in(dir, "after-upgrade");
    let c = s.client();
    // The password the format-3 release set is the account "admin"'s.
    let password = std::fs::read_to_string(fixture("format3/admin_password.txt")).unwrap();
    let password = password.trim();
    assert_eq!(login_as_response(&c, "someone", password).status, 401);
    let cookie = login_as(&c, "admin", password);
    let tokens = text(&get_page(&c, "/admin/tokens", &cookie));
    assert!(tokens.contains("data-token=\"fixture\""), "{tokens}");
    // Its token, users and groups came through.
    let token = std::fs::read_to_string(fixture("format3/token.txt")).unwrap();
    let old = c.with_token(token.trim());
    assert_eq!(old.get("/Users").json()["totalResults"], 3);
    assert_eq!(old.get("/Groups").json()["totalResults"], 3);
    assert_eq!(users_named(&old, "alice@example.com")["totalResults"], 1);
    s.stop();
}

/// The first line of `scimbridge serve` on `dir` that says the database format (the
/// server is stopped once it is read).
fn format_line_at_start(dir: &Path) -> String {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};
    let mut child = Command::new(crate::support::BIN)
        .arg("--data-dir")
        .arg(dir)
        .args(["serve", "--listen", "127.0.0.1:0"])
        .env_remove("SCIMBRIDGE_CONFIG")
        .env("SCIMBRIDGE_LOG", "info")
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if line.contains("database format") || line.contains("identity provider: ") {
                let _ = tx.send(line);
            }
        }
    });
    let line = rx.recv_timeout(std::time::Duration::from_secs(20));
    let _ = child.kill();
    let _ = child.wait();
    line.expect("the server said nothing of its database format within 20 s")
}

/// At start the log says the database format at info level: the upgrade done, with
/// the backup's path, or that none was needed.
#[test]
fn the_start_log_says_the_database_format_and_any_upgrade() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("scimbridge.redb");
    std::fs::copy(fixture("format3/format3.redb"), &db).unwrap();
    let line = format_line_at_start(dir.path());
    let backup = dir.path().join("scimbridge.redb.format3-backup");
    assert!(
        line.contains("INFO")
            && line.contains("database format 6, upgraded from format 3")
            && line.contains(&backup.display().to_string()),
        "{line}"
    );
    let line = format_line_at_start(dir.path());
    assert!(
        line.contains("INFO") && line.contains("database format 6, no upgrade needed"),
        "{line}"
    );
}

/// The ids of every user of `c`'s directory by offset pages of `count`, and by
/// cursor pages of `count` (RFC 9865): both walk id order.
fn user_ids_paged(c: &crate::support::Client, count: usize) -> (Vec<String>, Vec<String>) {
    let ids = |page: &Value| -> Vec<String> {
        page["Resources"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["id"].as_str().unwrap().to_owned())
            .collect()
    };
    let mut by_offset = Vec::new();
    loop {
        let r = c.get(&format!(
            "/Users?startIndex={}&count={count}&attributes=id",
            by_offset.len() + 1
        ));
        assert_eq!(r.status, 200);
        let page = ids(&r.json());
        if page.is_empty() {
            break;
        }
        by_offset.extend(page);
    }
    let mut by_cursor = Vec::new();
    let mut cursor = String::new();
    loop {
        let r = c.get(&format!(
            "/Users?count={count}&cursor={cursor}&attributes=id"
        ));
        assert_eq!(r.status, 200);
        let page = r.json();
        by_cursor.extend(ids(&page));
        match page["nextCursor"].as_str() {
            Some(next) => cursor = next.to_owned(),
            None => break,
        }
    }
    (by_offset, by_cursor)
}

#[test]
fn a_format_4_database_gets_its_id_tables_and_pages_by_offset_as_by_cursor() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        fixture("format4/format4.redb"),
        dir.path().join("scimbridge.redb"),
    )
    .unwrap();
    let (ok, _, stderr) = cli(dir.path(), &["token", "list"]);
    assert!(ok, "{stderr}");
    assert!(
        stderr.contains("upgraded the database from format 4 to 6"),
        "{stderr}"
    );
    assert!(dir.path().join("scimbridge.redb.format4-backup").exists());
    let mut s = Server::start_in(dir, "after-upgrade");
    let token = std::fs::read_to_string(fixture("format4/token.txt")).unwrap();
    let c = s.client().with_token(token.trim());
    // Format 4 refused two of make.sh's five users (caseless twin, two primaries).
    let (by_offset, by_cursor) = user_ids_paged(&c, 1);
    assert_eq!(by_offset.len(), 3);
    assert_eq!(by_offset, by_cursor);
    let mut sorted = by_offset.clone();
    sorted.sort();
    assert_eq!(by_offset, sorted, "offset pages are in id order");
    // Creates and deletes after the upgrade keep the id table in step.
    let created = c.post(
        "/Users",
        &serde_json::json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
                            "userName": "carol@example.com"}),
    );
    assert_eq!(created.status, 201);
    let carol = created.json()["id"].as_str().unwrap().to_owned();
    assert_eq!(c.delete(&format!("/Users/{}", by_offset[1])).status, 204);
    let (after, after_cursor) = user_ids_paged(&c, 2);
    assert_eq!(after, [by_offset[0].clone(), by_offset[2].clone(), carol]);
    assert_eq!(after, after_cursor);
    assert_eq!(
        c.get("/Groups?startIndex=1&count=10").json()["Resources"]
            .as_array()
            .unwrap()
            .len(),
        3
    );
    s.stop();
}

/// A database written by the format-5 release (`tests/fixtures/format5/`): carol's
/// manager was deleted under format 5, which kept the link; the upgrade clears it
/// (and says so), and after it a delete clears a deleted manager from its reports.
/// The membership cycle format 5 accepted stays, and `migrate check` names it.
#[test]
fn a_format_5_database_loses_links_to_deleted_managers_and_follows_deletes() {
    let ent = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User";
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        fixture("format5/format5.redb"),
        dir.path().join("scimbridge.redb"),
    )
    .unwrap();
    let (ok, _, stderr) = cli(dir.path(), &["token", "list"]);
    assert!(ok, "{stderr}");
    assert!(
        stderr.contains("upgraded the database from format 5 to 6")
            && stderr.contains("repaired: User ")
            && stderr.contains("its manager"),
        "{stderr}"
    );
    assert!(dir.path().join("scimbridge.redb.format5-backup").exists());
    let mut s = Server::start_in(dir, "after-upgrade");
    let token = std::fs::read_to_string(fixture("format5/token.txt")).unwrap();
    let c = s.client().with_token(token.trim());
    let one = |name: &str| users_named(&c, name)["Resources"][0].clone();
    let carol = one("carol@example.com");
    assert_eq!(carol.get(ent), None, "{carol}");
    let (alice, bob) = (one("alice@example.com"), one("bob@example.com"));
    assert_eq!(bob[ent]["manager"]["value"], alice["id"]);
    let r = c.delete(&format!("/Users/{}", alice["id"].as_str().unwrap()));
    assert_eq!(r.status, 204);
    let bob_after = one("bob@example.com");
    assert_eq!(bob_after[ent], serde_json::json!({"department": "R&D"}));
    assert_ne!(bob_after["meta"]["version"], bob["meta"]["version"]);
    // The two groups format 5 let contain each other are kept, and named by the
    // readiness check.
    let (_, out, err) = cli(&s.data_dir(), &["migrate", "check", "--json"]);
    let report: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}{err}"));
    let cycle = report["blockers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["code"] == "membership-cycle")
        .unwrap_or_else(|| panic!("{report}"));
    let names: Vec<&str> = cycle["subjects"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["Cycle A", "Cycle B"]);
    s.stop();
}
