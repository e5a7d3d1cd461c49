//! A migration that goes wrong under way, as an operator meets it (trial 3): a
//! database restored from a backup (which leaves the target's token out), a target
//! that stops answering, a dry run while the readiness check has blockers, and a
//! verify that must show what the target really holds. A real source bridge pushes
//! into a second real scimbridge over TLS on 127.0.0.1.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::support::admin::*;
use crate::support::quirky::{Quirks, Quirky};
use crate::support::*;
use serde_json::{json, Value};

const ENTERPRISE: &str = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User";

/// A source bridge (allowed domain example.com) with `users` users, a target
/// bridge, and the target's token file and CA; the source has pushed into the
/// target when `pushed`.
struct Pair {
    src: Server,
    target: Server,
    token_file: PathBuf,
    ca: PathBuf,
    _cfg: tempfile::TempDir,
}

impl Pair {
    fn start(users: &[&str], extra: &[&str]) -> Pair {
        let cfg = tempfile::tempdir().unwrap();
        let file = migration_config(cfg.path());
        let mut args = vec!["--config", file.to_str().unwrap()];
        args.extend_from_slice(extra);
        let src = Server::start_with(&args);
        let c = src.client();
        for u in users {
            assert_eq!(c.post("/Users", &user_body(u)).status, 201);
        }
        let target = Server::start();
        let token_file = cfg.path().join("target.token");
        std::fs::write(&token_file, format!("{}\n", target.token)).unwrap();
        let ca = target.data_dir().join("tls/cert.pem");
        Pair {
            src,
            target,
            token_file,
            ca,
            _cfg: cfg,
        }
    }

    /// `migrate push --to TARGET --token-file FILE --cacert CA` plus `extra`.
    fn push(&self, extra: &[&str]) -> (bool, String, String) {
        let mut args = vec![
            "migrate",
            "push",
            "--to",
            &self.target.base,
            "--token-file",
            self.token_file.to_str().unwrap(),
            "--cacert",
            self.ca.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        cli(&self.src.data_dir(), &args)
    }

    fn status(&self) -> Value {
        status_of(&self.src.data_dir())
    }

    fn status_text(&self) -> String {
        let (ok, out, err) = cli(&self.src.data_dir(), &["migrate", "status"]);
        assert!(ok, "{err}");
        out
    }

    /// The source's gauge `name` from /metrics.
    fn gauge(&self, name: &str) -> f64 {
        let m = self.src.client().send("GET", "/metrics", &[], None);
        let text = String::from_utf8_lossy(&m.body).into_owned();
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{name} ")))
            .unwrap_or_else(|| panic!("no {name} in {text}"))
            .parse()
            .unwrap()
    }

    /// Waits until the mirror has replayed everything and reports nothing wrong.
    fn wait_in_step(&self, within: Duration) -> Value {
        let mut last = Value::Null;
        poll(within, || {
            last = self.status();
            (last["lag"]["events"] == 0 && last["mirror"]["state"] == "in-step")
                .then(|| last.clone())
        })
        .unwrap_or_else(|| panic!("the mirror did not catch up: {last}"))
    }
}

fn status_of(data_dir: &Path) -> Value {
    let (ok, out, err) = cli(data_dir, &["migrate", "status", "--json"]);
    assert!(ok, "{err}");
    serde_json::from_str(&out).unwrap()
}

fn target_has_user(target: &Server, name: &str) -> bool {
    let filter = format!("/Users?filter=userName%20eq%20%22{name}%22");
    target.client().get(&filter).json()["totalResults"] == 1
}

/// Trial 3 item 2: a backup taken mid-migration leaves the target's token out. After
/// a restore the status says so at once (not a clean "verified"), the error names
/// the restore and the command that resumes (not "a cut-over removes it" and
/// `verify`), /metrics reports it, and `migrate push --token-file FILE` alone
/// resumes into the stored target (with the CA stored by the first push).
#[test]
fn a_restored_backup_says_the_token_is_missing_and_push_without_to_resumes() {
    let mut p = Pair::start(&["a@example.com", "b@example.com"], &[]);
    let (ok, out, err) = p.push(&[]);
    assert!(ok, "{out}{err}");
    p.wait_in_step(Duration::from_secs(30));
    assert_eq!(p.gauge("scimbridge_migration_error"), 0.0);

    let backup = p.src.data_dir().join("mid-migration.redb");
    let (ok, _, err) = cli(
        &p.src.data_dir(),
        &["backup", "--out", backup.to_str().unwrap()],
    );
    assert!(ok, "{err}");
    p.src.stop();
    std::fs::copy(&backup, p.src.data_dir().join("scimbridge.redb")).unwrap();
    p.src.restart();

    // Right after the restart, before any change: the state, in every place.
    let st = p.status();
    assert_eq!(st["phase"], "verified");
    assert_eq!(st["mirror"]["state"], "no-token", "{st}");
    let headline = st["phaseText"].as_str().unwrap();
    assert!(
        headline.starts_with("verified, but the mirror is stopped: no target token is stored"),
        "{headline}"
    );
    let error = st["state"]["lastError"].as_str().unwrap_or_default();
    assert!(
        error.contains("no target token is stored in this database")
            && error.contains("restored")
            && error.contains("`scimbridge migrate push --token-file FILE`")
            && !error.contains("cut-over removes")
            && !error.contains("migrate verify"),
        "{error}"
    );
    let shown = p.status_text();
    assert!(
        shown.starts_with("migration: verified, but the mirror is stopped")
            && shown.contains("last error: no target token is stored in this database"),
        "{shown}"
    );
    assert_eq!(p.gauge("scimbridge_migration_error"), 1.0);
    p.src
        .wait_for_log("migration mirror: the first attempt failed; retrying");

    // A change made now waits; it is not lost.
    let c = p.src.client();
    assert_eq!(c.post("/Users", &user_body("c@example.com")).status, 201);
    let st = p.status();
    assert_eq!(st["lag"]["events"], 1, "{st}");
    assert_eq!(st["mirror"]["state"], "no-token", "{st}");

    // On a bridge with no migration, `--to` is required and the error says so.
    let (ok, _, err) = cli(
        &p.target.data_dir(),
        &[
            "migrate",
            "push",
            "--token-file",
            p.token_file.to_str().unwrap(),
        ],
    );
    assert!(!ok && err.contains("give it with --to URL"), "{err}");

    // README: "after a restore, `migrate push --token-file` resumes a migration".
    let (ok, out, err) = cli(
        &p.src.data_dir(),
        &[
            "migrate",
            "push",
            "--token-file",
            p.token_file.to_str().unwrap(),
        ],
    );
    assert!(ok, "{out}{err}");
    assert!(
        err.contains(&format!(
            "target: {} (the migration's stored target",
            p.target.base
        )),
        "{err}"
    );
    let st = p.wait_in_step(Duration::from_secs(30));
    assert_eq!(st["phaseText"], "verified", "{st}");
    assert!(st["state"]["lastError"].is_null(), "{st}");
    assert_eq!(p.gauge("scimbridge_migration_error"), 0.0);
    assert!(target_has_user(&p.target, "c@example.com"));
    // And it keeps mirroring.
    assert_eq!(c.post("/Users", &user_body("d@example.com")).status, 201);
    p.wait_in_step(Duration::from_secs(30));
    assert!(target_has_user(&p.target, "d@example.com"));
}

/// Trial 3 item 8: a target that stops answering shows at the mirror's first failed
/// attempt (not once a request has failed all 8, about 50 s later): the status
/// headline is no plain "verified", the last error and "retrying (attempt N)" are
/// in `migrate status` and on the dashboard, /metrics reports it, and the first
/// failure is logged at WARN. Once the target is back, all of it clears.
#[test]
fn a_failing_mirror_shows_from_its_first_failed_attempt_and_clears() {
    let mut p = Pair::start(&["a@example.com"], &[]);
    let (ok, out, err) = p.push(&[]);
    assert!(ok, "{out}{err}");
    p.wait_in_step(Duration::from_secs(30));
    let c = p.src.client();
    let link = setup_link(&p.src);
    assert_eq!(set_password(&c, &link, PASSWORD).status, 303);
    let cookie = login(&c, PASSWORD);

    p.target.stop();
    assert_eq!(c.post("/Users", &user_body("b@example.com")).status, 201);
    // The client's 8 attempts take 0.2 + 0.4 + … + 25.6 s; the first is refused
    // at once (nothing listens), so 10 s is far below the last.
    let mut st = Value::Null;
    poll(Duration::from_secs(10), || {
        st = p.status();
        (st["mirror"]["state"] == "failing").then_some(())
    })
    .unwrap_or_else(|| panic!("no failure shown after 10 s: {st}"));
    let attempt = st["mirror"]["attempt"].as_u64().unwrap();
    assert!(attempt >= 2, "{st}");
    let headline = st["phaseText"].as_str().unwrap();
    assert!(
        headline.starts_with("verified, but the mirror is failing: retrying (attempt "),
        "{headline}"
    );
    assert!(
        st["state"]["lastError"]
            .as_str()
            .is_some_and(|e| e.contains("cannot connect")),
        "{st}"
    );
    let shown = p.status_text();
    assert!(
        shown.contains("failing: retrying (attempt ") && shown.contains("last error: "),
        "{shown}"
    );
    assert_eq!(p.gauge("scimbridge_migration_error"), 1.0);
    assert!(p.gauge("scimbridge_migration_mirror_failures") >= 1.0);
    let log = p
        .src
        .wait_for_log("migration mirror: the first attempt failed; retrying");
    assert!(
        log.lines()
            .any(|l| l.contains("WARN") && l.contains("the first attempt failed")),
        "{log}"
    );
    let dashboard = text(&get_page(&c, "/admin", &cookie));
    assert!(
        dashboard.contains("mirror retrying (attempt "),
        "{dashboard}"
    );
    let page = text(&get_page(&c, "/admin/migration", &cookie));
    assert!(
        page.contains("id=\"mirror-health\"") && page.contains("failing: retrying (attempt "),
        "{page}"
    );

    // The target is back: the mirror catches up (after at most its pause of 30 s
    // and a client backoff) and nothing is reported any more.
    p.target.restart();
    let st = p.wait_in_step(Duration::from_secs(120));
    assert_eq!(st["phaseText"], "verified", "{st}");
    assert!(st["state"]["lastError"].is_null(), "{st}");
    assert_eq!(st["state"]["mirrorFailures"], 0, "{st}");
    assert_eq!(p.gauge("scimbridge_migration_error"), 0.0);
    assert_eq!(p.gauge("scimbridge_migration_mirror_failures"), 0.0);
    assert!(target_has_user(&p.target, "b@example.com"));
}

/// Trial 3 item 9: README says a dry run "prints the plan … and writes nothing".
/// With readiness blockers it prints them and the plan, writes nothing and exits
/// non-zero; the push itself still refuses.
#[test]
fn a_dry_run_with_blockers_prints_them_and_the_plan() {
    let p = Pair::start(&["a@example.com", "outsider@elsewhere.org"], &[]);
    let (ok, out, err) = p.push(&["--dry-run"]);
    assert!(!ok, "blockers make the dry run exit non-zero: {out}{err}");
    assert!(
        out.starts_with("The readiness check has 1 blocker; the push refuses until they are fixed"),
        "{out}"
    );
    assert!(out.contains("elsewhere.org"), "the blocker: {out}");
    assert!(
        out.contains("Plan (dry run, nothing was sent):")
            && out.contains("users:  2 (2 to create, 0 to update)")
            && out.contains("outsider@elsewhere.org"),
        "the plan: {out}"
    );
    assert_eq!(
        p.target.client().get("/Users").json()["totalResults"],
        0,
        "a dry run writes nothing"
    );
    let st = p.status();
    assert!(st["state"]["target"].is_null(), "{st}");
    // The push refuses, naming the blockers.
    let (ok, out, err) = p.push(&[]);
    assert!(!ok && err.contains("blockers"), "{out}{err}");
    assert_eq!(p.target.client().get("/Users").json()["totalResults"], 0);
}

/// Trial 3 item 10: a manager link this directory cannot map to the target was
/// reported as `target null` even when the target held a manager; verify reports
/// the target's own value. Here the manager was deleted on the target by hand and
/// the push that would create it again is refused, so its journal entry is gone
/// while the report's link on the target still names the old id.
#[test]
fn verify_reports_the_targets_own_manager_value() {
    let t = Quirky::start(Quirks::default());
    let cfg = tempfile::tempdir().unwrap();
    let file = migration_config(cfg.path());
    let src = Server::start_with(&["--config", file.to_str().unwrap()]);
    let c = src.client();
    let id_of = |r: Resp| r.json()["id"].as_str().unwrap().to_owned();
    let boss = id_of(c.post("/Users", &user_body("boss@example.com")));
    let alice = id_of(c.post("/Users", &user_body("alice@example.com")));
    let set = json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
        "Operations": [{"op": "add", "path": format!("{ENTERPRISE}:manager"), "value": {"value": boss}}]});
    assert_eq!(c.patch(&format!("/Users/{alice}"), &set).status, 200);
    let token_file = cfg.path().join("target.token");
    std::fs::write(&token_file, &t.token).unwrap();
    let push = || {
        cli(
            &src.data_dir(),
            &[
                "migrate",
                "push",
                "--to",
                &t.base,
                "--token-file",
                token_file.to_str().unwrap(),
            ],
        )
    };
    let (ok, out, err) = push();
    assert!(ok, "{out}{err}");
    let on_target = |name: &str| {
        t.users()
            .into_iter()
            .find(|u| u["userName"] == name)
            .unwrap_or_else(|| panic!("no {name} on the target"))
    };
    let t_boss = on_target("boss@example.com")["id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        on_target("alice@example.com")[ENTERPRISE]["manager"]["value"],
        t_boss.as_str()
    );
    // The manager deleted on the target by hand (its report keeps the link there),
    // and the push that would create it again refused.
    assert!(t.state.lock().unwrap().delete("Users", &t_boss));
    t.set(|q| q.refuse_creates = true);
    let (ok, out, err) = push();
    assert!(!ok, "the create is refused: {out}{err}");

    let (ok, out, err) = cli(&src.data_dir(), &["migrate", "verify"]);
    assert!(!ok, "differences: {out}{err}");
    let line = out
        .lines()
        .find(|l| l.contains("alice@example.com") && l.contains(":manager"))
        .unwrap_or_else(|| panic!("no manager difference for alice: {out}"));
    assert!(
        line.contains(&format!("target {{\"value\":\"{t_boss}\"}}"))
            && !line.contains("target null"),
        "{line}"
    );
    let (_, out, _) = cli(&src.data_dir(), &["migrate", "verify", "--json"]);
    let report: Value = serde_json::from_str(&out).unwrap();
    let d = report["differences"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["name"] == "alice@example.com" && d["kind"] == "attribute")
        .unwrap_or_else(|| panic!("{report}"))
        .clone();
    assert_eq!(d["target"], json!({"value": t_boss}), "{d}");
    assert!(
        d["local"]
            .as_str()
            .is_some_and(|l| l.contains("never pushed")),
        "{d}"
    );
}

/// Trial 8 item 11 (README: "A resource changed by hand on the target is repaired the
/// same way"): after a push, a user's title changed by hand on the target is found by
/// the next push's closing verification, sent again and verified once more: the push
/// exits 0, names what it repaired, and the target holds the directory's value again.
/// A group's member removed there and a user deleted there are put back as before.
#[test]
fn a_push_repairs_attributes_and_members_changed_by_hand_on_the_target() {
    let p = Pair::start(&["a@example.com", "b@example.com", "c@example.com"], &[]);
    let c = p.src.client();
    let users: Vec<String> = ["a@example.com", "b@example.com"]
        .iter()
        .map(|n| {
            c.get(&format!("/Users?filter=userName%20eq%20%22{n}%22"))
                .json()["Resources"][0]["id"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    let title = json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
        "Operations": [{"op": "replace", "path": "title", "value": "Engineer"}]});
    assert_eq!(c.patch(&format!("/Users/{}", users[0]), &title).status, 200);
    let group = json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"],
        "displayName": "Pilots",
        "members": [{"value": users[0]}, {"value": users[1]}]});
    assert_eq!(c.post("/Groups", &group).status, 201);
    let (ok, out, err) = p.push(&[]);
    assert!(ok, "{out}{err}");
    assert!(out.contains("verified: the target matches"), "{out}");
    assert!(!out.contains("repaired:"), "nothing to repair yet: {out}");
    // Trial 8 items 8 and 16: the push runs in the server, and the command says so
    // first; its first progress report is printed at once, not after five seconds.
    let lines: Vec<&str> = err.lines().collect();
    assert!(
        lines.first().is_some_and(|l| l.starts_with(
            "this runs inside the server: interrupting this command does not stop it"
        )) && lines.get(1).is_some_and(|l| !l.is_empty()),
        "{err}"
    );
    let (_, _, err) = p.push(&["--dry-run"]);
    assert!(
        !err.contains("inside the server"),
        "a dry run is not said to go on: {err}"
    );
    p.wait_in_step(Duration::from_secs(30));

    // By hand on the target: a's title, Pilots loses b, c deleted.
    let tc = p.target.client();
    let on_target = |filter: &str| tc.get(filter).json()["Resources"][0].clone();
    let ta = on_target("/Users?filter=userName%20eq%20%22a@example.com%22");
    let tb = on_target("/Users?filter=userName%20eq%20%22b@example.com%22");
    let tcu = on_target("/Users?filter=userName%20eq%20%22c@example.com%22");
    let tg = on_target("/Groups?filter=displayName%20eq%20%22Pilots%22");
    let (ta, tb) = (ta["id"].as_str().unwrap(), tb["id"].as_str().unwrap());
    let tg = tg["id"].as_str().unwrap();
    let edit = json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
        "Operations": [{"op": "replace", "path": "title", "value": "Hand-edited"}]});
    assert_eq!(tc.patch(&format!("/Users/{ta}"), &edit).status, 200);
    let drop_b = json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
        "Operations": [{"op": "remove", "path": format!("members[value eq \"{tb}\"]")}]});
    let r = tc.patch(&format!("/Groups/{tg}"), &drop_b);
    assert!(r.status == 200 || r.status == 204, "{}", r.status);
    let r = tc.delete(&format!("/Users/{}", tcu["id"].as_str().unwrap()));
    assert_eq!(r.status, 204);

    // Trial 8 item 18: a cut-over refused for differences records its verification
    // as verify does: no longer "verified", and the differences on the page.
    assert_eq!(p.status()["phase"], "verified");
    let (ok, out, err) = cli(
        &p.src.data_dir(),
        &["migrate", "cutover", "--confirm-irreversible"],
    );
    assert!(!ok && err.contains("3 differences"), "{out}{err}");
    let st = p.status();
    assert_eq!(st["phase"], "mirroring", "{st}");
    assert_eq!(st["state"]["lastVerify"]["count"], 3, "{st}");
    assert!(
        st["phaseText"]
            .as_str()
            .unwrap()
            .contains("the last verify found 3 differences"),
        "{st}"
    );
    let (ok, out, err) = cli(&p.src.data_dir(), &["migrate", "verify"]);
    assert!(!ok, "verify sees the hand edits: {out}{err}");
    assert!(
        out.contains("Hand-edited") && out.contains("Pilots") && out.contains("c@example.com"),
        "{out}"
    );

    let (ok, out, err) = p.push(&[]);
    assert!(ok, "the push repairs them: {out}{err}");
    // The push syncs every group's members itself; the title needs the repair.
    // Trial 8 item 9: the first run's counts are not lost (3 users and a group).
    assert!(
        out.contains("(1 created, ")
            && out.contains("  earlier runs of this migration's push: 4 created, 0 updated"),
        "{out}"
    );
    assert!(
        out.contains("repaired: 1 resource the target held otherwise")
            && out.contains("  User a@example.com")
            && out.contains("verified: the target matches the directory"),
        "{out}"
    );
    assert_eq!(tc.get(&format!("/Users/{ta}")).json()["title"], "Engineer");
    let members: Vec<Value> = tc.get(&format!("/Groups/{tg}")).json()["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["value"].clone())
        .collect();
    assert!(
        members.contains(&json!(tb)) && members.len() == 2,
        "{members:?}"
    );
    assert!(target_has_user(&p.target, "c@example.com"));
    let (_, out, _) = p.push(&["--json"]);
    let report: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        report["repaired"],
        json!([]),
        "nothing left to repair: {report}"
    );
    assert_eq!(report["differences"], json!([]), "{report}");
    assert_eq!(report["earlier_created"], 5, "{report}");
    let (ok, out, err) = cli(&p.src.data_dir(), &["migrate", "verify"]);
    assert!(ok, "{out}{err}");
}

/// Trial 8 item 7: a dry run into a target that already holds part of the team says
/// what the push will change there, before anything is sent: a matched group renamed
/// to the directory's displayName, the members of ours it loses (a matched user not in
/// the directory's group) and gains, and the accounts only the target has (left
/// alone, also as members). Then the push does exactly that.
#[test]
fn a_dry_run_names_what_the_push_changes_on_the_target() {
    let p = Pair::start(&["a@example.com", "b@example.com"], &[]);
    let c = p.src.client();
    let b = c
        .get("/Users?filter=userName%20eq%20%22b@example.com%22")
        .json()["Resources"][0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let group = json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"],
        "displayName": "Pilots", "members": [{"value": b}]});
    assert_eq!(c.post("/Groups", &group).status, 201);
    // The target already holds a (by another case), an owner of its own, and "pilots"
    // with a and the owner as members.
    let tc = p.target.client();
    let id_of = |r: Resp| r.json()["id"].as_str().unwrap().to_owned();
    let ta = id_of(tc.post("/Users", &user_body("A@example.com")));
    let owner = id_of(tc.post("/Users", &user_body("owner@example.com")));
    let tgroup = json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"],
        "displayName": "pilots", "members": [{"value": ta}, {"value": owner}]});
    let tg = id_of(tc.post("/Groups", &tgroup));

    let (ok, out, err) = p.push(&["--dry-run"]);
    assert!(ok, "{out}{err}");
    assert!(
        out.contains("Groups the target already holds that the push changes (1; the directory wins):")
            && out.contains(
                "    Group Pilots: renamed from \"pilots\"; 1 member added; 1 member removed (A@example.com)"
            )
            && out.contains("1 account only on the target (left alone):\n    User owner@example.com"),
        "{out}"
    );
    let (ok, json_plan, _) = p.push(&["--dry-run", "--json"]);
    assert!(ok);
    let plan: Value = serde_json::from_str(&json_plan).unwrap();
    assert_eq!(
        plan["onlyOnTarget"],
        json!(["User owner@example.com"]),
        "{plan}"
    );
    assert_eq!(
        plan["groupChanges"][0]["removed"],
        json!(["A@example.com"]),
        "{plan}"
    );
    // Nothing was sent.
    assert_eq!(
        tc.get(&format!("/Groups/{tg}")).json()["displayName"],
        "pilots"
    );

    let (ok, out, err) = p.push(&[]);
    assert!(ok, "{out}{err}");
    let g = tc.get(&format!("/Groups/{tg}")).json();
    assert_eq!(g["displayName"], "Pilots");
    let members: BTreeSet<String> = g["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["value"].as_str().unwrap().to_owned())
        .collect();
    assert!(
        members.contains(&owner) && !members.contains(&ta) && members.len() == 2,
        "the owner stays, a leaves, b joins: {members:?}"
    );
}

/// Trial 8 item 26: a mistyped port (nothing listens) fails the first contact after
/// three attempts, saying so, instead of the 8 attempts and 51 s of backoff that a
/// target gone away mid-push is given; nothing was sent, so nothing is left behind.
#[test]
fn a_target_that_never_answered_fails_after_three_attempts() {
    let p = Pair::start(&["a@example.com"], &[]);
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let url = format!("https://127.0.0.1:{closed}/scim/v2");
    let before = p.status()["phase"].clone();
    for dry in [true, false] {
        let mut args = vec![
            "migrate",
            "push",
            "--to",
            &url,
            "--token-file",
            p.token_file.to_str().unwrap(),
        ];
        if dry {
            args.push("--dry-run");
        }
        let (ok, out, err) = cli(&p.src.data_dir(), &args);
        assert!(!ok, "{out}{err}");
        assert!(
            err.contains(&format!(
                "GET {url}/ServiceProviderConfig failed after 3 attempts: "
            )) && err.contains("cannot connect")
                && err.contains("nothing was sent: check the URL and port")
                && !err.contains("The push stopped"),
            "{err}"
        );
    }
    // Nothing was sent: the migration is where it was, not mirroring into nowhere.
    assert_eq!(p.status()["phase"], before, "nothing started");
}
