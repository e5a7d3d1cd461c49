//! `scimbridge migrate check`: each blocker and warning, named users and groups, exit
//! codes, and the JSON form.

use crate::support::*;
use serde_json::{json, Value};

fn user(c: &Client, name: &str, email: Option<&str>, active: bool) -> String {
    let mut body = json!({"userName": name, "active": active});
    if let Some(e) = email {
        body["emails"] = json!([{"value": e, "type": "work", "primary": true}]);
    }
    let r = c.post("/Users", &body);
    assert_eq!(r.status, 201);
    r.json()["id"].as_str().unwrap().to_owned()
}

fn config(dir: &std::path::Path, allowed: &str) -> std::path::PathBuf {
    let p = dir.join("migration.toml");
    std::fs::write(&p, format!("[migration]\nallowed_domains = [{allowed}]\nprotected_groups = [\"Owners\", \"Administrators\"]\n")).unwrap();
    p
}

fn check(s: &Server, cfg: &std::path::Path, json_out: bool) -> (bool, String, String) {
    let mut args = vec!["--config", cfg.to_str().unwrap(), "migrate", "check"];
    if json_out {
        args.push("--json");
    }
    // With a server running, the check runs there, under the server's configuration.
    cli(&s.data_dir(), &args)
}

fn codes(list: &Value) -> Vec<String> {
    list.as_array()
        .unwrap()
        .iter()
        .map(|f| f["code"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn each_blocker_and_warning_names_who_is_concerned() {
    let cfgdir = tempfile::tempdir().unwrap();
    let cfg = config(cfgdir.path(), "\"example.com\"");
    let s = Server::start_with(&["--config", cfg.to_str().unwrap()]);
    let c = s.client();
    let ok_user = user(&c, "ok@example.com", Some("ok@example.com"), true);
    let outside = user(&c, "bob@other.org", Some("bob@other.org"), true);
    let gmail = user(&c, "carol", Some("Carol@GMail.com"), true);
    let none = user(&c, "dave", None, true);
    let inactive = user(&c, "erin@example.com", Some("erin@example.com"), false);
    let dup1 = user(&c, "f1", Some("shared@example.com"), true);
    let dup2 = user(&c, "f2", Some("SHARED@example.com"), true);
    let owners = c
        .post(
            "/Groups",
            &json!({"displayName": "owners", "members": [{"value": ok_user}]}),
        )
        .json();
    c.post("/Groups", &json!({"displayName": "Engineering"}));

    let (ok, out, err) = check(&s, &cfg, true);
    assert!(!ok, "blockers must exit non-zero: {err}");
    let r: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(r["ready"], false);
    assert_eq!(
        codes(&r["blockers"]),
        vec!["domain-not-allowed", "public-mail-domain", "no-email"]
    );
    assert_eq!(
        codes(&r["warnings"]),
        vec!["protected-group", "inactive-user", "duplicate-email"]
    );
    let ids = |f: &Value| -> Vec<String> {
        f["subjects"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["id"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(ids(&r["blockers"][0]), vec![outside.clone()]);
    assert_eq!(r["blockers"][0]["subjects"][0]["email"], "bob@other.org");
    assert_eq!(ids(&r["blockers"][1]), vec![gmail]);
    assert_eq!(ids(&r["blockers"][2]), vec![none.clone()]);
    assert_eq!(
        ids(&r["warnings"][0]),
        vec![owners["id"].as_str().unwrap().to_owned()]
    );
    assert_eq!(r["warnings"][0]["subjects"][0]["name"], "owners");
    assert_eq!(ids(&r["warnings"][1]), vec![inactive]);
    let mut d = ids(&r["warnings"][2]);
    d.sort();
    let mut expected = vec![dup1, dup2];
    expected.sort();
    assert_eq!(d, expected);

    // The text form names them too.
    let (_, text, _) = check(&s, &cfg, false);
    assert!(
        text.starts_with("Migration readiness: BLOCKED (7 users, 2 groups)"),
        "{text}"
    );
    assert!(
        text.contains("bob@other.org") && text.contains("dave") && text.contains("owners"),
        "{text}"
    );

    // Fix the blockers: the check passes (exit 0) with warnings only.
    for id in [&outside, &none] {
        assert_eq!(c.delete(&format!("/Users/{id}")).status, 204);
    }
    let r = c.get("/Users?filter=userName%20eq%20%22carol%22").json();
    let carol = r["Resources"][0]["id"].as_str().unwrap().to_owned();
    assert_eq!(
        c.put(
            &format!("/Users/{carol}"),
            &json!({"userName": "carol", "emails": [{"value": "carol@example.com"}]})
        )
        .status,
        200
    );
    let (ok, out, err) = check(&s, &cfg, true);
    assert!(ok, "{out}{err}");
    let r: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(r["ready"], true);
    assert_eq!(r["blockers"], json!([]));
}

#[test]
fn allowed_domains_must_be_configured() {
    let s = Server::start();
    let c = s.client();
    user(&c, "a@example.com", Some("a@example.com"), true);
    let (ok, out, _) = cli(&s.data_dir(), &["migrate", "check", "--json"]);
    assert!(!ok);
    let r: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        codes(&r["blockers"]),
        vec!["allowed-domains-not-configured"]
    );
}

/// A manager link to a user that is not in the directory blocks the migration, naming
/// the user and what to do; removing the link clears the blocker. Deleting a manager
/// clears it from its reports (format 6), so such a link now comes only from an
/// import of an older export (its manager deleted under a release that kept the link).
/// A server on a new data directory into which `export` (an older release's file,
/// holding what the SCIM API now refuses) was imported, with the migration `cfg`.
fn serve_imported(export: &crate::support::export::ExportFile, cfg: &std::path::Path) -> Server {
    let files = tempfile::tempdir().unwrap();
    let file = files.path().join("older.jsonl");
    export.write(&file);
    let data = tempfile::tempdir().unwrap();
    let (ok, out, err) = cli(data.path(), &["import", file.to_str().unwrap()]);
    assert!(ok, "{out}{err}");
    Server::start_in_with(data, "check", &["--config", cfg.to_str().unwrap()])
}

#[test]
fn a_manager_that_does_not_exist_is_a_blocker_with_the_remedy() {
    let cfgdir = tempfile::tempdir().unwrap();
    let cfg = config(cfgdir.path(), "\"example.com\"");
    let ent = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User";
    let person = |name: &str, manager: Option<&str>| {
        let mut u = json!({"userName": name, "emails": [{"value": name}]});
        if let Some(m) = manager {
            u[ent] = json!({"manager": {"value": m}});
        }
        u
    };
    let mut export = crate::support::export::ExportFile::default();
    let boss = export.user(person("boss@example.com", None));
    let alice = export.user(person("alice@example.com", Some(&boss)));
    let carol = export.user(person(
        "carol@example.com",
        Some("0190a000-0000-7000-8000-00000000dead"),
    ));
    let s = serve_imported(&export, &cfg);
    let c = s.client();
    let (ok, out, _) = check(&s, &cfg, true);
    assert!(!ok, "{out}");
    let r: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(codes(&r["blockers"]), vec!["unknown-manager"]);
    assert_eq!(r["blockers"][0]["subjects"].as_array().unwrap().len(), 1);
    assert_eq!(r["blockers"][0]["subjects"][0]["id"], carol.as_str());
    let message = r["blockers"][0]["message"].as_str().unwrap();
    assert!(
        message.starts_with("1 user has a manager that does not exist in this directory")
            && message.contains("remove"),
        "{message}"
    );
    // Deleting a manager takes the link with it: no new blocker for alice.
    assert_eq!(get_manager(&c, &alice), Some(json!({"value": boss})));
    assert_eq!(c.delete(&format!("/Users/{boss}")).status, 204);
    assert_eq!(get_manager(&c, &alice), None);
    let (_, out, _) = check(&s, &cfg, true);
    let r: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(r["blockers"][0]["subjects"][0]["id"], carol.as_str());
    assert_eq!(r["blockers"][0]["subjects"].as_array().unwrap().len(), 1);
    // The remedy the message gives clears the blocker.
    let remove = json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
        "Operations": [{"op": "remove", "path": format!("{ent}:manager")}]});
    assert_eq!(c.patch(&format!("/Users/{carol}"), &remove).status, 200);
    let (ok, out, err) = check(&s, &cfg, true);
    assert!(ok, "{out}{err}");
}

fn get_manager(c: &Client, id: &str) -> Option<Value> {
    let u = c.get(&format!("/Users/{id}")).json();
    u["urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"]
        .get("manager")
        .cloned()
}

/// Groups that contain themselves through other groups (what an older release
/// accepted and its export keeps) import as they were and block the migration,
/// naming every group of each cycle and the cycle itself; a SCIM write that would
/// close a cycle again is refused, and removing one membership clears the blocker.
#[test]
fn a_membership_cycle_is_a_blocker_naming_its_groups() {
    let cfgdir = tempfile::tempdir().unwrap();
    let cfg = config(cfgdir.path(), "\"example.com\"");
    let mut export = crate::support::export::ExportFile::default();
    let alice = export.user(json!({"userName": "alice@example.com",
        "emails": [{"value": "alice@example.com"}]}));
    let a = export.group(json!({"displayName": "Cycle A"}));
    let b = export.group(json!({"displayName": "Cycle B"}));
    let x = export.group(json!({"displayName": "X"}));
    let y = export.group(json!({"displayName": "Y"}));
    let z = export.group(json!({"displayName": "Z"}));
    let flat = export.group(json!({"displayName": "Nested, no cycle"}));
    export.member(&a, &alice, "User");
    export.member(&a, &b, "Group");
    export.member(&b, &a, "Group");
    export.member(&y, &x, "Group");
    export.member(&z, &y, "Group");
    export.member(&x, &z, "Group");
    export.member(&flat, &a, "Group");
    let s = serve_imported(&export, &cfg);
    let c = s.client();

    let (ok, out, _) = check(&s, &cfg, true);
    assert!(!ok, "{out}");
    let r: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(codes(&r["blockers"]), vec!["membership-cycle"]);
    let names: Vec<&str> = r["blockers"][0]["subjects"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["Cycle A", "Cycle B", "X", "Y", "Z"]);
    let message = r["blockers"][0]["message"].as_str().unwrap();
    assert!(
        message.starts_with("5 groups contain themselves through other groups")
            && message.contains("\"Cycle A\" → \"Cycle B\" → \"Cycle A\"")
            && message.contains("\"X\" → \"Y\" → \"Z\" → \"X\"")
            && message.contains("remove"),
        "{message}"
    );
    let (_, text, _) = check(&s, &cfg, false);
    assert!(
        text.contains("[membership-cycle]") && text.contains("Group Cycle B"),
        "{text}"
    );

    // The groups still serve; alice is in Cycle A directly and in Cycle B and
    // "Nested, no cycle" through it, each listed once.
    let groups = c.get(&format!("/Users/{alice}")).json()["groups"].clone();
    assert_eq!(groups.as_array().unwrap().len(), 3, "{groups}");

    // Removing one membership of each cycle clears the blocker; closing one again is
    // refused with the cycle named.
    let remove = |group: &str, member: &str| {
        let body = json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
            "Operations": [{"op": "remove", "path": format!("members[value eq \"{member}\"]")}]});
        let r = c.patch(&format!("/Groups/{group}"), &body);
        assert!(r.status == 200 || r.status == 204, "{}", r.status);
    };
    remove(&a, &b);
    remove(&x, &z);
    let (ok, out, err) = check(&s, &cfg, true);
    assert!(ok, "{out}{err}");
    let again = json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
        "Operations": [{"op": "add", "path": "members", "value": [{"value": b}]}]});
    let r = c.patch(&format!("/Groups/{a}"), &again);
    assert_scim_error(&r, 400, Some("invalidValue"));
    let detail = r.json()["detail"].as_str().unwrap().to_owned();
    assert!(
        detail.contains("\"Cycle A\" → \"Cycle B\" → \"Cycle A\""),
        "{detail}"
    );
}
