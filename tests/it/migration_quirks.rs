//! Issue 15: the migration against the quirks of hosted SCIM targets. Each test
//! seeds a bridge with `scimbridge import` (`SMALL`: 300 users, 13 groups: "All staff"
//! with 250 members, Inner nested in Outer, 24 manager links; `LARGE`, for the one
//! test where size is the point: 2,100 users, 33 groups, "All staff" with 2,000
//! members, 174 manager links), starts the quirky target (`support::quirky`) with
//! one switch on, pushes, compares the target's true state with the source (users,
//! attributes, manager links mapped to the target's ids, groups, nested and large
//! memberships, no duplicates), runs verify, mirrors writes made after the push, and
//! pushes again. Issue 9: the size costs minutes per test in a debug build, so only
//! the PATCH batching test (a group over 1,000 members) pushes `LARGE`.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::support::admin;
use crate::support::export::ExportFile;
use crate::support::quirky::{Quirks, Quirky, ENTERPRISE};
use crate::support::*;
use serde_json::{json, Value};

/// The directory a test pushes.
#[derive(Debug, Clone, Copy)]
struct Size {
    users: usize,
    /// Members of "All staff" (users 0..big).
    big: usize,
    /// "Team t" groups of `team` members each.
    teams: usize,
    team: usize,
}

impl Size {
    /// Groups: All staff, the teams, Inner and Outer.
    fn groups(self) -> usize {
        self.teams + 3
    }
    /// Users with a manager (every 12th from user12 on).
    fn manager_links(self) -> usize {
        (12..self.users).step_by(12).count()
    }
}

/// What every quirk but the sizes needs: more than one page of users (200), nested
/// groups, a large group, manager links.
const SMALL: Size = Size {
    users: 300,
    big: 250,
    teams: 10,
    team: 5,
};
/// Issue 15's directory: "All staff" over 1,000 members (PATCH batches of 1,000).
const LARGE: Size = Size {
    users: 2100,
    big: 2000,
    teams: 30,
    team: 20,
};
const PATCH_OP: &str = "urn:ietf:params:scim:api:messages:2.0:PatchOp";

/// The id `ExportFile` gives the i-th user / group.
fn uid(i: usize) -> String {
    format!("00000000-0000-7000-8000-{i:012x}")
}
fn gid(i: usize) -> String {
    format!("00000000-0000-7000-9000-{i:012x}")
}

/// Writes an export file of the test directory.
fn write_export(path: &Path, size: Size) {
    let mut f = ExportFile::default();
    let mut manager_links = 0;
    for i in 0..size.users {
        let mut ent = json!({"department": format!("dept{}", i % 7)});
        if i >= 12 && i % 12 == 0 {
            ent["manager"] = json!({"value": uid(i / 12)});
            manager_links += 1;
        }
        let id = f.user(json!({
            "userName": format!("user{i}@example.com"), "externalId": format!("ext-u{i}"),
            "name": {"givenName": format!("Given{i}"), "familyName": "Family"},
            "displayName": format!("User {i}"), "active": true, "title": "Engineer",
            "emails": [{"value": format!("user{i}@example.com"), "type": "work", "primary": true}],
            ENTERPRISE: ent}));
        assert_eq!(id, uid(i));
    }
    assert_eq!(manager_links, size.manager_links());
    let mut group = |name: &str, i: usize| {
        let id = f.group(json!({"displayName": name, "externalId": format!("ext-g{i}")}));
        assert_eq!(id, gid(i));
    };
    let (inner, outer) = (size.teams + 1, size.teams + 2);
    group("All staff", 0);
    for t in 0..size.teams {
        group(&format!("Team {t}"), t + 1);
    }
    group("Inner", inner);
    group("Outer", outer);
    for u in 0..size.big {
        f.member(&gid(0), &uid(u), "User");
    }
    for t in 0..size.teams {
        for u in size.team * t..size.team * (t + 1) {
            f.member(&gid(t + 1), &uid(u), "User");
        }
    }
    for u in size.big..size.big + 10 {
        f.member(&gid(inner), &uid(u), "User");
    }
    for u in size.big + 10..size.big + 20 {
        f.member(&gid(outer), &uid(u), "User");
    }
    f.member(&gid(outer), &gid(inner), "Group");
    f.write(path);
}

/// A bridge seeded by `scimbridge import`, with the migration policy allowing the
/// test's domain, and a file holding the target's token.
struct Source {
    server: Server,
    _cfg: tempfile::TempDir,
    token_file: PathBuf,
    /// The directory it was seeded with.
    size: Size,
}

fn source(target: &Quirky, size: Size) -> Source {
    source_of(target, size, |p| write_export(p, size))
}

/// `source` with another directory, written by `seed` as an export file.
fn source_of(target: &Quirky, size: Size, seed: impl FnOnce(&Path)) -> Source {
    let cfg = tempfile::tempdir().unwrap();
    let cfg_file = migration_config(cfg.path());
    let export = cfg.path().join("seed.jsonl");
    seed(&export);
    let dir = tempfile::tempdir().unwrap();
    let (ok, out, err) = cli(dir.path(), &["import", export.to_str().unwrap()]);
    assert!(ok, "{out}{err}");
    let server = Server::start_in_with(dir, "idp", &["--config", cfg_file.to_str().unwrap()]);
    let token_file = cfg.path().join("target.token");
    std::fs::write(&token_file, &target.token).unwrap();
    Source {
        server,
        _cfg: cfg,
        token_file,
        size,
    }
}

impl Source {
    fn push(&self, target: &Quirky, extra: &[&str]) -> (bool, String, String) {
        let mut args = vec![
            "migrate",
            "push",
            "--to",
            &target.base,
            "--token-file",
            self.token_file.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        cli(&self.server.data_dir(), &args)
    }
    fn status(&self) -> Value {
        let (ok, out, err) = cli(&self.server.data_dir(), &["migrate", "status", "--json"]);
        assert!(ok, "{err}");
        serde_json::from_str(&out).unwrap()
    }
    /// The directory as `scimbridge export` writes it (one consistent snapshot, much
    /// faster than listing through SCIM): users and groups shaped as SCIM resources,
    /// groups with their members.
    fn directory(&self) -> (Vec<Value>, Vec<Value>) {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("x.jsonl");
        let (ok, _, err) = cli(
            &self.server.data_dir(),
            &["export", "--out", file.to_str().unwrap()],
        );
        assert!(ok, "{err}");
        let (mut users, mut groups) = (Vec::new(), BTreeMap::new());
        for line in std::fs::read_to_string(&file).unwrap().lines() {
            let v: Value = serde_json::from_str(line).unwrap();
            match v["type"].as_str().unwrap() {
                "User" | "Group" => {
                    let mut r = v["attributes"].clone();
                    r["id"] = v["id"].clone();
                    if v["type"] == "User" {
                        users.push(r);
                    } else {
                        r["members"] = json!([]);
                        groups.insert(v["id"].as_str().unwrap().to_owned(), r);
                    }
                }
                "membership" => {
                    let g = groups.get_mut(v["group"].as_str().unwrap()).unwrap();
                    g["members"]
                        .as_array_mut()
                        .unwrap()
                        .push(json!({"value": v["member"]}));
                }
                _ => {}
            }
        }
        (users, groups.into_values().collect())
    }

    fn wait_for_mirror(&self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let v = self.status();
            if v["lag"]["events"] == 0 {
                assert!(v["state"]["lastError"].is_null(), "mirror error: {v}");
                return;
            }
            assert!(Instant::now() < deadline, "mirror did not catch up: {v}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// The target's users whose userName is `name` by our rule (case-insensitive).
fn users_named(t: &Quirky, name: &str) -> Vec<Value> {
    t.users()
        .into_iter()
        .filter(|u| u["userName"].as_str().unwrap().eq_ignore_ascii_case(name))
        .collect()
}

/// What a test expects the target not to have kept.
#[derive(Default, Clone, Copy)]
struct Expect {
    no_enterprise: bool,
    no_external_id: bool,
}

/// Compares the target's true state with the source: every user once (by our
/// case-insensitive rule), its attributes, its manager mapped to the target's id of
/// the same person; every group once, its members by name (nested and large).
/// Accounts only the target has (`only`) are allowed and must be untouched.
fn assert_target_matches(src: &Source, t: &Quirky, only: &[&str], expect: Expect) {
    let (users, groups) = src.directory();
    let tusers = t.users();
    let tgroups = t.groups();
    // No duplicates, nobody missing.
    let mut by_name: BTreeMap<String, Vec<&Value>> = BTreeMap::new();
    for u in &tusers {
        by_name
            .entry(u["userName"].as_str().unwrap().to_lowercase())
            .or_default()
            .push(u);
    }
    for (n, v) in &by_name {
        assert_eq!(v.len(), 1, "duplicates on the target for {n}");
    }
    assert_eq!(
        tusers.len(),
        users.len() + only.len(),
        "users on the target"
    );
    for o in only {
        assert!(
            by_name.contains_key(*o),
            "target-only account {o} was removed"
        );
    }
    let src_name: HashMap<&str, String> = users
        .iter()
        .map(|u| {
            (
                u["id"].as_str().unwrap(),
                u["userName"].as_str().unwrap().to_lowercase(),
            )
        })
        .collect();
    let tid_of = |name: &str| by_name[name][0]["id"].as_str().unwrap().to_owned();
    let mut links = 0;
    for u in &users {
        let name = u["userName"].as_str().unwrap().to_lowercase();
        let got = by_name
            .get(&name)
            .unwrap_or_else(|| panic!("{name} missing on the target"))[0];
        for k in ["name", "displayName", "active", "emails", "title"] {
            assert_eq!(got.get(k), u.get(k), "{name}: {k}");
        }
        if !expect.no_external_id {
            assert_eq!(got["externalId"], u["externalId"], "{name}: externalId");
        } else {
            assert!(got.get("externalId").is_none());
        }
        if expect.no_enterprise {
            assert!(got.get(ENTERPRISE).is_none(), "{name}");
            continue;
        }
        assert_eq!(
            got[ENTERPRISE]["department"], u[ENTERPRISE]["department"],
            "{name}: department"
        );
        match u[ENTERPRISE]["manager"]["value"].as_str() {
            Some(m) => {
                let want = tid_of(&src_name[m]);
                assert_eq!(
                    got[ENTERPRISE]["manager"]["value"].as_str(),
                    Some(want.as_str()),
                    "{name}: manager link"
                );
                links += 1;
            }
            None => assert!(
                got[ENTERPRISE].get("manager").is_none(),
                "{name}: no manager"
            ),
        }
    }
    if !expect.no_enterprise {
        assert!(
            links >= src.size.manager_links(),
            "manager links compared: {links}"
        );
    }
    // Groups by displayName, members by name.
    let tname: HashMap<String, String> = tusers
        .iter()
        .map(|u| {
            (
                u["id"].as_str().unwrap().to_owned(),
                u["userName"].as_str().unwrap().to_lowercase(),
            )
        })
        .chain(tgroups.iter().map(|g| {
            (
                g["id"].as_str().unwrap().to_owned(),
                format!("group:{}", g["displayName"].as_str().unwrap()),
            )
        }))
        .collect();
    let sname: HashMap<String, String> = src_name
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .chain(groups.iter().map(|g| {
            (
                g["id"].as_str().unwrap().to_owned(),
                format!("group:{}", g["displayName"].as_str().unwrap()),
            )
        }))
        .collect();
    assert_eq!(tgroups.len(), groups.len(), "groups on the target");
    let members = |g: &Value, names: &HashMap<String, String>| -> BTreeSet<String> {
        g["members"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|m| {
                let v = m["value"].as_str().unwrap();
                names
                    .get(v)
                    .cloned()
                    .unwrap_or_else(|| format!("dangling:{v}"))
            })
            .filter(|n| !only.contains(&n.as_str()))
            .collect()
    };
    for g in &groups {
        let dn = g["displayName"].as_str().unwrap();
        let found: Vec<&Value> = tgroups.iter().filter(|x| x["displayName"] == dn).collect();
        assert_eq!(found.len(), 1, "group {dn} on the target");
        if !expect.no_external_id {
            assert_eq!(found[0]["externalId"], g["externalId"], "group {dn}");
        }
        let want = members(g, &sname);
        let got = members(found[0], &tname);
        assert_eq!(got.len(), want.len(), "members of {dn}");
        assert_eq!(got, want, "members of {dn}");
    }
}

/// The identity provider keeps writing after the push: a new user with a manager,
/// one-member changes to a small and to the large group, a manager change, a rename,
/// a deletion (of the last user). Returns the new user's name.
fn write_after_push(c: &Client, size: Size) -> &'static str {
    let last = size.users - 1;
    // The ids the export file gave them (`import` keeps ids).
    let ids: HashMap<String, String> = [0, 1, 5, 24, last]
        .into_iter()
        .map(|i| (format!("user{i}@example.com"), uid(i)))
        .chain([
            ("group:All staff".to_owned(), gid(0)),
            ("group:Team 1".to_owned(), gid(2)),
            ("group:Team 2".to_owned(), gid(3)),
        ])
        .collect();
    let late = c.post(
        "/Users",
        &json!({"userName": "late@example.com", "externalId": "ext-late",
        "displayName": "Late", "active": true, "title": "Engineer",
        "name": {"givenName": "Late", "familyName": "Family"},
        "emails": [{"value": "late@example.com", "type": "work", "primary": true}],
        ENTERPRISE: {"department": "dept1", "manager": {"value": ids["user0@example.com"]}}}),
    );
    assert_eq!(late.status, 201, "{}", String::from_utf8_lossy(&late.body));
    let late_id = late.json()["id"].as_str().unwrap().to_owned();
    let patch = |path: String, ops: Value| {
        let r = c.patch(&path, &json!({"schemas": [PATCH_OP], "Operations": ops}));
        assert!(
            r.status == 200 || r.status == 204,
            "{}",
            String::from_utf8_lossy(&r.body)
        );
    };
    patch(
        format!("/Groups/{}", ids["group:Team 1"]),
        json!([{"op": "add", "path": "members", "value": [{"value": late_id}]}]),
    );
    patch(
        format!("/Groups/{}", ids["group:All staff"]),
        json!([{"op": "remove", "path": format!("members[value eq \"{}\"]", ids["user5@example.com"])}]),
    );
    patch(
        format!("/Groups/{}", ids["group:Team 2"]),
        json!([{"op": "replace", "value": {"displayName": "Team 2 renamed"}}]),
    );
    patch(
        format!("/Users/{}", ids["user24@example.com"]),
        json!([{"op": "replace", "path": format!("{ENTERPRISE}:manager"), "value": {"value": ids["user1@example.com"]}}]),
    );
    assert_eq!(
        c.delete(&format!(
            "/Users/{}",
            ids[&format!("user{last}@example.com")]
        ))
        .status,
        204
    );
    "late@example.com"
}

/// The common course of every quirk: push, compare, verify, mirror later writes,
/// compare, push again (which changes nothing), compare.
fn full_course(t: &Quirky, src: &Source, push_args: &[&str], only: &[&str], expect: Expect) {
    let (ok, out, err) = src.push(t, push_args);
    assert!(ok, "push failed:\n{out}\n{err}");
    assert!(
        out.contains("verified: the target matches the directory"),
        "{out}"
    );
    let c = src.server.client();
    assert_target_matches(src, t, only, expect);
    let (ok, out, err) = cli(&src.server.data_dir(), &["migrate", "verify"]);
    assert!(ok, "verify:\n{out}\n{err}");
    for o in only {
        assert!(out.contains(o), "verify names {o}: {out}");
    }
    write_after_push(&c, src.size);
    src.wait_for_mirror();
    assert_target_matches(src, t, only, expect);
    let posts = t.count("POST", 201);
    let (ok, out, err) = src.push(t, push_args);
    assert!(ok, "second push:\n{out}\n{err}");
    assert_eq!(
        t.count("POST", 201),
        posts,
        "the second push created something"
    );
    assert_target_matches(src, t, only, expect);
}

#[test]
fn quirk_none_compliant_target_costs_few_requests() {
    let t = Quirky::start(Quirks::default());
    let src = source(&t, SMALL);
    // Before any push the status says what the directory holds and what to run
    // (it said "0/0 users, 0/0 groups").
    let (ok, out, _) = cli(&src.server.data_dir(), &["migrate", "status"]);
    assert!(ok);
    assert!(
        out.contains(
            "pushed:    nothing yet; the directory holds 300 users, 13 groups and 321 memberships\n"
        ) && out.contains("next:      `scimbridge migrate check`"),
        "{out}"
    );
    assert!(!out.contains("0/0"), "{out}");
    assert_eq!(src.status()["directory"]["memberships"], 321);
    let (ok, out, err) = src.push(&t, &[]);
    assert!(ok, "{out}{err}");
    // One POST per resource, one PATCH per 1,000 members, one PUT per manager link
    // set after its manager existed, pages to verify: far from two lookups per user.
    let requests = t.requests();
    let resources = (SMALL.users + SMALL.groups()) as u64;
    assert!(requests < resources * 13 / 10, "{requests} requests");
    assert!(t.count("GET", 200) < 200, "GETs: {}", t.count("GET", 200));
    full_course(&t, &src, &[], &[], Expect::default());
    // The status names the capabilities found and the rules that matched.
    let (ok, out, _) = cli(&src.server.data_dir(), &["migrate", "status"]);
    assert!(ok);
    assert!(
        out.contains("bulk: no") && out.contains("cursor paging: no"),
        "{out}"
    );
    assert!(out.contains("already pushed (journal)"), "{out}");
    // /metrics carries the phase (4: verified) and the mirror lag.
    let m = src.server.client().send("GET", "/metrics", &[], None);
    let text = String::from_utf8_lossy(&m.body);
    assert!(text.contains("\nscimbridge_migration_phase 4\n"), "{text}");
    assert!(
        text.contains("\nscimbridge_migration_mirror_lag_events 0\n"),
        "{text}"
    );
    assert!(text.contains("\nscimbridge_migration_error 0\n"), "{text}");
}

#[test]
fn quirk_1_refused_external_id_filter_is_skipped() {
    let t = Quirky::start(Quirks {
        refuse_external_id_filter: true,
        ..Quirks::default()
    });
    let src = source(&t, SMALL);
    full_course(&t, &src, &[], &[], Expect::default());
    // The mirror looked a new user up: the refused matcher was skipped, userName
    // matched an account the target already had.
    t.seed_user(json!({"userName": "later@example.com", "displayName": "Later"}));
    let c = src.server.client();
    assert_eq!(
        c.post(
            "/Users",
            &json!({"userName": "later@example.com", "displayName": "Later",
            "emails": [{"value": "later@example.com", "primary": true}]})
        )
        .status,
        201
    );
    src.wait_for_mirror();
    let n = t
        .users()
        .iter()
        .filter(|u| u["userName"] == "later@example.com")
        .count();
    assert_eq!(n, 1, "matched, not duplicated");
    assert!(t.count("GET", 400) >= 1, "the refused filter was tried");
}

/// Six users (user1 managed by user0) and one group of four, for a target much
/// larger than the directory.
fn write_small_export(path: &Path) {
    let mut f = ExportFile::default();
    for i in 0..6 {
        let mut ent = json!({"department": "dept"});
        if i == 1 {
            ent["manager"] = json!({"value": uid(0)});
        }
        f.user(json!({
            "userName": format!("user{i}@example.com"), "externalId": format!("ext-u{i}"),
            "displayName": format!("User {i}"), "active": true,
            "emails": [{"value": format!("user{i}@example.com"), "type": "work", "primary": true}],
            ENTERPRISE: ent}));
    }
    let g = f.group(json!({"displayName": "Small team", "externalId": "ext-g0"}));
    for i in 0..4 {
        f.member(&g, &uid(i), "User");
    }
    f.write(path);
}

/// A first push does not always list the target: into a tenant far larger than the
/// directory (1,000 accounts in pages of 50 for 6 users) it looks each user up by
/// filter, so a refused `externalId` filter is met there, skipped after one refusal
/// for the rest of the run, kept in the migration state with the target's detail
/// (shown by `migrate status` and the Migration page), and skipped by the mirror.
#[test]
fn quirk_1_refused_filter_on_a_first_push_into_a_large_target() {
    let t = Quirky::start(Quirks {
        refuse_external_id_filter: true,
        page_cap: 50,
        ..Quirks::default()
    });
    for i in 0..1000 {
        t.seed_user(json!({"userName": format!("staff{i}@corp.example")}));
    }
    // The same person as user3, by our case-insensitive rule.
    let existing = t.seed_user(json!({"userName": "USER3@example.com"}));
    t.seed_user(json!({"userName": "later@example.com", "displayName": "Later"}));
    let src = source_of(&t, SMALL, write_small_export);
    let (ok, out, err) = src.push(&t, &["--parallel", "2"]);
    assert!(ok, "push failed:\n{out}\n{err}");
    let note = "the target refused the filter `externalId eq …` on /Users \
                (400: invalidFilter: filtering on externalId is not supported); \
                matching goes on without it";
    assert!(out.contains(note), "{out}");
    // A listing never filters: the lookups were made, and the refused one only by
    // the two lookups in flight when the first refusal came (of six users).
    let refusals = t.count("GET", 400);
    assert!((1..=2).contains(&refusals), "{refusals} refusals");
    let users = t.users();
    assert_eq!(
        users.len(),
        1002 + 5,
        "user3 matched, the other five created"
    );
    let user = |n: &str| {
        let found = users.iter().find(|u| {
            u["userName"]
                .as_str()
                .is_some_and(|x| x.eq_ignore_ascii_case(n))
        });
        found
            .unwrap_or_else(|| panic!("{n} not on the target"))
            .clone()
    };
    assert_eq!(user("user3@example.com")["id"], existing.as_str());
    assert_eq!(
        user("user1@example.com")[ENTERPRISE]["manager"]["value"],
        user("user0@example.com")["id"],
        "the manager link is mapped to the target's id"
    );
    let groups = t.groups();
    assert_eq!(groups.len(), 1);
    let members = member_values(&groups[0]);
    assert!(members.contains(existing.as_str()), "{members:?}");
    assert_eq!(members.len(), 4);
    // Kept for `migrate status` and the page.
    let st = src.status();
    assert_eq!(
        st["state"]["refusedFilters"]["/Users externalId"], note,
        "{st}"
    );
    let (ok, text, _) = cli(&src.server.data_dir(), &["migrate", "status"]);
    assert!(ok);
    assert!(
        text.contains("filters the target refused (skipped):") && text.contains(note),
        "{text}"
    );
    let c = src.server.client();
    let r = admin::set_password(&c, &admin::setup_link(&src.server), admin::PASSWORD);
    assert_eq!(r.status, 303);
    let cookie = admin::login(&c, admin::PASSWORD);
    let page = admin::text(&admin::get_page(&c, "/admin/migration", &cookie));
    assert!(
        page.contains("id=\"refused-filters\"")
            && page.contains(
                "on /Users (400: invalidFilter: filtering on externalId is not supported)"
            ),
        "{page}"
    );
    // The mirror skips the refused filter and matches a new user by userName.
    let created = c.post(
        "/Users",
        &json!({"userName": "Later@example.com", "externalId": "ext-later",
            "emails": [{"value": "later@example.com", "primary": true}]}),
    );
    assert_eq!(created.status, 201);
    src.wait_for_mirror();
    let later = users_named(&t, "later@example.com").len();
    assert_eq!(later, 1, "matched, not duplicated");
    assert_eq!(
        t.count("GET", 400),
        refusals,
        "the mirror did not try it again"
    );
}

#[test]
fn quirk_2_3_existing_accounts_manager_links_resume_and_abort() {
    let t = Quirky::start(Quirks::default());
    // The hosted side already knows 13 of the team (ids of its own, no manager) and
    // has three accounts the identity provider never provisioned.
    for i in (0..SMALL.big).step_by(20) {
        t.seed_user(
            json!({"userName": format!("user{i}@example.com"), "displayName": format!("User {i}")}),
        );
    }
    for o in [
        "owner@example.com",
        "billing@example.com",
        "break-glass@example.com",
    ] {
        t.seed_user(json!({"userName": o, "displayName": o}));
    }
    let only = [
        "owner@example.com",
        "billing@example.com",
        "break-glass@example.com",
    ];
    let src = source(&t, SMALL);
    // Interrupted: the target refuses creates after the matched users were updated.
    t.set(|q| q.refuse_creates = true);
    let (ok, out, err) = src.push(&t, &[]);
    assert!(!ok, "{out}");
    assert!(err.contains("creates are refused"), "{err}");
    assert!(
        !err.contains("resume"),
        "a refusal is not a passing failure: {err}"
    );
    let st = src.status();
    assert_eq!(st["phase"], "mirroring", "not stuck at pushing: {st}");
    assert_eq!(st["state"]["pushIncomplete"], true);
    // The error is shown as an error (issue 14), in the status and in /metrics.
    let (_, text, _) = cli(&src.server.data_dir(), &["migrate", "status"]);
    assert!(
        text.contains("last error:") && text.contains("incomplete"),
        "{text}"
    );
    let m = src.server.client().send("GET", "/metrics", &[], None);
    let metrics = String::from_utf8_lossy(&m.body);
    assert!(
        metrics.contains("\nscimbridge_migration_error 1\n"),
        "{metrics}"
    );
    t.set(|q| q.refuse_creates = false);
    // Resumed: every manager link is mapped, including those of accounts that existed.
    let (ok, out, err) = src.push(&t, &[]);
    assert!(ok, "{out}{err}");
    assert!(out.contains("3 accounts only on the target"), "{out}");
    assert!(out.contains("matched by userName"), "{out}");
    assert_target_matches(&src, &t, &only, Expect::default());
    // Abort, then a new push: links that were right stay right.
    let (ok, _, err) = cli(&src.server.data_dir(), &["migrate", "abort"]);
    assert!(ok, "{err}");
    full_course(&t, &src, &[], &only, Expect::default());
}

#[test]
fn quirk_4_case_sensitive_lookup_409_means_match() {
    let t = Quirky::start(Quirks {
        filter_case_sensitive: true,
        ..Quirks::default()
    });
    t.seed_user(json!({"userName": "User50@EXAMPLE.COM", "displayName": "User 50"}));
    let src = source(&t, SMALL);
    full_course(&t, &src, &[], &[], Expect::default());
    // The mirror creates a user the target knows under another case: its filter
    // misses, the create answers 409 uniqueness, and the push finds and matches.
    t.seed_user(json!({"userName": "NEWCOMER@example.com", "displayName": "x"}));
    let c = src.server.client();
    assert_eq!(
        c.post(
            "/Users",
            &json!({"userName": "newcomer@example.com", "displayName": "Newcomer",
            "emails": [{"value": "newcomer@example.com", "primary": true}]})
        )
        .status,
        201
    );
    src.wait_for_mirror();
    assert!(t.count("POST", 409) >= 1);
    let same: Vec<Value> = t
        .users()
        .into_iter()
        .filter(|u| u["userName"].as_str().unwrap().to_lowercase() == "newcomer@example.com")
        .collect();
    assert_eq!(same.len(), 1, "{same:?}");
    assert_eq!(same[0]["displayName"], "Newcomer");
}

#[test]
fn quirk_4_case_sensitive_target_gets_no_duplicates_and_verify_names_them() {
    let t = Quirky::start(Quirks {
        filter_case_sensitive: true,
        unique_case_sensitive: true,
        ..Quirks::default()
    });
    t.seed_user(json!({"userName": "User51@EXAMPLE.COM", "displayName": "User 51"}));
    let src = source(&t, SMALL);
    full_course(&t, &src, &[], &[], Expect::default());
    // A duplicate made on the target is named by userName.
    let dup = t.seed_user(json!({"userName": "USER7@example.com", "displayName": "dup"}));
    let (ok, out, _) = cli(&src.server.data_dir(), &["migrate", "verify"]);
    assert!(!ok, "{out}");
    assert!(
        out.contains("User user7@example.com: 2 copies on the target")
            || out.contains("User USER7@example.com: 2 copies on the target"),
        "{out}"
    );
    t.state.lock().unwrap().remove_user(&dup);
    let (ok, out, _) = cli(&src.server.data_dir(), &["migrate", "verify"]);
    assert!(ok, "{out}");
}

#[test]
fn quirk_5_strict_schemas_are_listed_before_any_write() {
    let t = Quirky::start(Quirks {
        strict_schemas: true,
        ..Quirks::default()
    });
    let src = source(&t, SMALL);
    let dir = src.server.data_dir();
    let tf = src.token_file.to_str().unwrap().to_owned();
    let (ok, out, _) = cli(
        &dir,
        &["migrate", "check", "--to", &t.base, "--token-file", &tf],
    );
    assert!(!ok, "{out}");
    // Trial 8 item 23: with how many resources hold each (what leaving it out drops).
    assert!(
        out.contains(&format!(
            "    {ENTERPRISE}:department (held by {} resources)",
            SMALL.users
        )),
        "{out}"
    );
    assert!(
        out.contains(&format!(
            "    {ENTERPRISE}:manager (held by {} resources)",
            SMALL.manager_links()
        )),
        "{out}"
    );
    let (ok, out, _) = src.push(&t, &["--dry-run"]);
    assert!(!ok, "a plan that cannot be pushed is not clean: {out}");
    assert!(out.contains(&format!("{ENTERPRISE}:department")), "{out}");
    let created = format!("created ({})", SMALL.users + SMALL.groups());
    assert!(out.contains(&created), "{out}");
    let (ok, out, err) = src.push(&t, &[]);
    assert!(!ok, "{out}");
    assert!(
        err.contains("--omit-unsupported")
            && err.contains(&format!("{ENTERPRISE}:department"))
            && !err.contains("The push stopped"),
        "nothing was sent, so no word of resuming (trial 8 item 23): {err}"
    );
    assert_eq!(t.users().len(), 0, "nothing was written");
    assert_eq!(src.status()["phase"], "checked", "back where it was");
    full_course(
        &t,
        &src,
        &["--omit-unsupported"],
        &[],
        Expect {
            no_enterprise: true,
            ..Expect::default()
        },
    );
    let (ok, out, _) = cli(&dir, &["migrate", "verify"]);
    assert!(ok);
    assert_eq!(
        out.matches(&format!("{ENTERPRISE}:department")).count(),
        1,
        "reported once: {out}"
    );
    // Trial 8 item 23: running the push again (as the README says to after any
    // interruption) keeps the first push's --omit-unsupported, and says so.
    let (ok, out, err) = src.push(&t, &[]);
    assert!(ok, "{out}{err}");
    assert!(
        out.contains("left out, as the first push of this migration was told (--omit-unsupported)")
            && out.contains(&format!("{ENTERPRISE}:department"))
            && out.contains("verified: the target matches"),
        "{out}"
    );
}

#[test]
fn quirk_5_an_attribute_dropped_by_the_target_is_reported_once() {
    let t = Quirky::start(Quirks {
        drops_external_id: true,
        ..Quirks::default()
    });
    let src = source(&t, SMALL);
    let expect = Expect {
        no_external_id: true,
        ..Expect::default()
    };
    full_course(&t, &src, &[], &[], expect);
    let (ok, out, _) = cli(&src.server.data_dir(), &["migrate", "verify"]);
    assert!(ok, "{out}");
    assert!(out.contains("attributes the target does not keep"), "{out}");
    assert_eq!(out.matches("  externalId").count(), 1, "{out}");
}

#[test]
fn quirk_6_membership_only_by_patch_one_member_mirrored_as_one() {
    let t = Quirky::start(Quirks {
        no_group_put: true,
        ..Quirks::default()
    });
    // The one test that pushes a group over 1,000 members (PATCH batches).
    let src = source(&t, LARGE);
    full_course(&t, &src, &[], &[], Expect::default());
    assert_eq!(t.count("PUT", 405), 0, "no whole-group PUT was tried");
    // The mirrored one-member changes were one-member PATCHes.
    let patches = t.state.lock().unwrap().group_patches.clone();
    let one_member = patches
        .iter()
        .filter(|p| {
            let ops = p["Operations"].as_array().unwrap();
            ops.len() == 1
                && (ops[0]["value"].as_array().is_some_and(|v| v.len() == 1)
                    || ops[0]["op"] == "remove")
        })
        .count();
    assert!(one_member >= 2, "{patches:?}");
    // The large group went in batches of at most 1,000.
    assert!(patches.iter().all(|p| p["Operations"]
        .as_array()
        .unwrap()
        .iter()
        .all(|o| o["value"].as_array().is_none_or(|v| v.len() <= 1000))));
}

/// Issue 10: verify reads the groups page by page without their members
/// (`excludedAttributes=members`: a 100,000-member group in a listing page is tens
/// of MB), then each group's members on their own (`attributes=members`); the push
/// sent members only as PATCH batches, never a whole-group PUT.
#[test]
fn quirk_9_verify_lists_groups_without_members_page_by_page() {
    let t = Quirky::start(Quirks {
        page_cap: 5,
        no_group_put: true,
        ..Quirks::default()
    });
    let src = source(&t, SMALL);
    let (ok, out, err) = src.push(&t, &[]);
    assert!(ok, "{out}{err}");
    assert_eq!(t.count("PUT", 405), 0, "no whole-group PUT was tried");
    t.state.lock().unwrap().group_gets.clear();
    let (ok, out, err) = cli(&src.server.data_dir(), &["migrate", "verify"]);
    assert!(ok, "{out}{err}");
    let gets = t.state.lock().unwrap().group_gets.clone();
    let (listings, reads): (Vec<_>, Vec<_>) = gets.iter().partition(|(p, _)| p == "/Groups");
    // 13 groups, 5 a page.
    assert_eq!(listings.len(), SMALL.groups().div_ceil(5), "{listings:?}");
    assert!(
        listings
            .iter()
            .all(
                |(_, q)| q.get("excludedAttributes").map(String::as_str) == Some("members")
                    && q.get("attributes").is_none()
            ),
        "{listings:?}"
    );
    assert_eq!(reads.len(), SMALL.groups(), "{reads:?}");
    assert!(
        reads
            .iter()
            .all(|(_, q)| q.get("attributes").map(String::as_str) == Some("members")),
        "{reads:?}"
    );
}

#[test]
fn quirk_6_membership_only_by_put() {
    let t = Quirky::start(Quirks {
        no_group_patch: true,
        ..Quirks::default()
    });
    let src = source(&t, SMALL);
    full_course(&t, &src, &[], &[], Expect::default());
    let (_, out, _) = cli(&src.server.data_dir(), &["migrate", "status"]);
    assert!(out.contains("group members sent by: PUT"), "{out}");
}

#[test]
fn quirk_7_body_limit_found_by_413_is_split() {
    let t = Quirky::start(Quirks {
        max_body: Some(32 * 1024),
        bulk: true,
        ..Quirks::default()
    });
    let src = source(&t, SMALL);
    full_course(&t, &src, &[], &[], Expect::default());
    assert!(t.count("PATCH", 413) + t.count("POST", 413) > 0);
}

#[test]
fn quirk_7_announced_body_limit_is_respected() {
    let t = Quirky::start(Quirks {
        max_body: Some(32 * 1024),
        announced_payload: Some(32 * 1024),
        bulk: true,
        ..Quirks::default()
    });
    let src = source(&t, SMALL);
    full_course(&t, &src, &[], &[], Expect::default());
    let refused: u64 = ["POST", "PATCH", "PUT"]
        .iter()
        .map(|m| t.count(m, 413))
        .sum();
    assert_eq!(refused, 0, "every request fit the announced limit");
}

#[test]
fn quirk_8_503_after_processing_creates_no_duplicates() {
    for bulk in [true, false] {
        let t = Quirky::start(Quirks {
            fail_after_processing: if bulk { 3 } else { 97 },
            bulk,
            ..Quirks::default()
        });
        let src = source(&t, SMALL);
        full_course(&t, &src, &[], &[], Expect::default());
        assert!(t.count("POST", 503) > 0, "bulk {bulk}");
    }
}

#[test]
fn quirk_9_throttled_capped_pages_and_cursor() {
    let t = Quirky::start(Quirks {
        throttle_every: 25,
        page_cap: 50,
        cursor: true,
        bulk: true,
        ..Quirks::default()
    });
    t.seed_user(json!({"userName": "owner@example.com"}));
    let src = source(&t, SMALL);
    let (ok, out, err) = src.push(&t, &["--parallel", "4"]);
    assert!(ok, "{out}{err}");
    assert!(!out.contains(" 0 throttled"), "{out}");
    assert!(err.contains("429"), "the retry reason is shown: {err}");
    full_course(&t, &src, &[], &["owner@example.com"], Expect::default());
}

/// A hosted service that answers only filtered searches (403 on GET /Users or
/// /Groups without a filter): the push does not stop at its first count; it looks
/// each resource up by filter, verify reads each one by id, and both say what could
/// not be looked for.
#[test]
fn quirk_11_unfiltered_listing_refused_falls_back_to_lookups() {
    let t = Quirky::start(Quirks {
        refuse_unfiltered_list: true,
        ..Quirks::default()
    });
    // An account the push must match by userName (it cannot be listed).
    let existing = t.seed_user(json!({"userName": "User3@example.com", "displayName": "x"}));
    let src = source(&t, SMALL);
    let note = "the target refused to list /Users without a filter \
                (403: listing without a filter is not allowed)";
    let (ok, out, err) = src.push(&t, &["--dry-run"]);
    assert!(ok, "dry run:\n{out}\n{err}");
    assert!(out.contains(note), "{out}");
    full_course(&t, &src, &[], &[], Expect::default());
    let refused = t.count("GET", 403);
    assert!(
        refused >= 4,
        "users and groups, dry run and push: {refused}"
    );
    let user3 = users_named(&t, "user3@example.com");
    assert_eq!(user3.len(), 1);
    assert_eq!(user3[0]["id"], existing.as_str(), "matched, not created");
    let (ok, out, err) = cli(&src.server.data_dir(), &["migrate", "verify"]);
    assert!(ok, "verify:\n{out}\n{err}");
    assert!(
        out.contains(note) && out.contains("/Groups without a filter"),
        "verify says what it could not look for: {out}"
    );
    // The Migration page shows the same notes (the trial: only the CLI printed them).
    {
        use crate::support::admin as ui;
        let c = src.server.client();
        let link = ui::setup_link(&src.server);
        assert_eq!(ui::set_password(&c, &link, ui::PASSWORD).status, 303);
        let cookie = ui::login(&c, ui::PASSWORD);
        let page = ui::text(&ui::get_page(&c, "/admin/migration", &cookie));
        let notes = page
            .find("id=\"verify-notes\"")
            .map(|i| &page[i..])
            .unwrap_or_else(|| panic!("no verify notes: {page}"));
        let notes = &notes[..notes.find("</details>").unwrap_or(notes.len())];
        assert!(
            notes.contains(note) && notes.contains("/Groups without a filter"),
            "{notes}"
        );
    }
    let (ok, text, _) = cli(&src.server.data_dir(), &["migrate", "status"]);
    assert!(ok);
    assert!(text.contains(note), "{text}");
}

/// Issue 15 trial: a user deleted on the target after a push, on a target that will
/// not be listed (so the push cannot see beforehand that it is gone). The target's 400
/// for the old member id makes the push read the ids it sent, drop the one answering
/// 404 from the journal and go round once more: user1 is created anew, and "All
/// staff" and user12's manager link carry its new id. The push used to stop on the
/// 400 for good ("running it again will fail the same way").
#[test]
fn quirk_11_user_deleted_on_an_unlistable_target_is_pushed_again() {
    let (t, src, old) = user1_deleted_from_unlistable();
    let (ok, out, err) = src.push(&t, &[]);
    assert!(ok, "the second push repairs the target:\n{out}\n{err}");
    let again = users_named(&t, "user1@example.com");
    assert_eq!(again.len(), 1);
    assert_ne!(again[0]["id"], old.as_str(), "created anew");
    assert_target_matches(&src, &t, &[], Expect::default());
    // Each resource counted once, by the decision that stands: the push went round
    // twice and counted every resource of the journal again in the second round.
    assert_counts(
        &out,
        1,
        &[("already pushed (journal)", 312), ("created", 1)],
    );
}

/// The push's summary: "pushed 300 users and 13 groups (N created, 0 updated, …)",
/// then one line per matching rule, which add up to the directory.
fn assert_counts(out: &str, created: u64, rules: &[(&str, u64)]) {
    let head = format!(
        "pushed {} users and {} groups ({created} created, 0 updated, ",
        SMALL.users,
        SMALL.groups()
    );
    assert!(out.contains(&head), "{head}\n{out}");
    let listed: Vec<(String, u64)> = out
        .lines()
        .take_while(|l| !l.starts_with("verified") && !l.contains("difference"))
        .filter_map(|l| {
            let (rule, n) = l.strip_prefix("  ")?.rsplit_once(": ")?;
            Some((rule.to_owned(), n.parse().ok()?))
        })
        .collect();
    let want: Vec<(String, u64)> = rules.iter().map(|(r, n)| (r.to_string(), *n)).collect();
    assert_eq!(listed, want, "{out}");
    let sum: u64 = listed.iter().map(|(_, n)| n).sum();
    assert_eq!(sum as usize, SMALL.users + SMALL.groups(), "{out}");
}

/// A target that cannot be listed (with `quirks` besides), `SMALL` pushed into it.
fn pushed_into_unlistable(quirks: Quirks) -> (Quirky, Source) {
    let t = Quirky::start(Quirks {
        refuse_unfiltered_list: true,
        ..quirks
    });
    let src = source(&t, SMALL);
    let (ok, out, err) = src.push(&t, &[]);
    assert!(ok, "{out}{err}");
    (t, src)
}

/// `pushed_into_unlistable`, then user1 (in All staff and Team 0, user12's
/// manager) deleted on the target; its old id.
fn user1_deleted_from_unlistable() -> (Quirky, Source, String) {
    let (t, src) = pushed_into_unlistable(Quirks::default());
    let old = user_id(&t, "user1@example.com");
    assert!(t.state.lock().unwrap().delete("Users", &old));
    (t, src, old)
}

/// The target's id of the one user named `name` by our rule.
fn user_id(t: &Quirky, name: &str) -> String {
    let found = users_named(t, name);
    assert_eq!(found.len(), 1, "{name}: {found:?}");
    found[0]["id"].as_str().unwrap().to_owned()
}

/// The target's id of the group named `name`.
fn group_id(t: &Quirky, name: &str) -> String {
    let found: Vec<String> = t
        .groups()
        .into_iter()
        .filter(|g| g["displayName"] == name)
        .map(|g| g["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(found.len(), 1, "{name}: {found:?}");
    found[0].clone()
}

/// Issue 15 follow-up: on a target that cannot be listed and takes members only by
/// PUT, a user and a group deleted on the target after the push. The whole-group PUT
/// naming the deleted user (400) and the read of the deleted group (404) make the
/// push read the ids involved, drop the stale journal entries and go round once
/// more: both are created anew and linked (members, user12's manager). The push
/// used to stop on the first of them, pointing to `migrate abort`.
#[test]
fn quirk_11_deleted_on_an_unlistable_put_only_target_are_pushed_again() {
    let (t, src) = pushed_into_unlistable(Quirks {
        no_group_patch: true,
        ..Quirks::default()
    });
    let old_user = user_id(&t, "user1@example.com");
    let old_team = group_id(&t, "Team 0");
    {
        let mut st = t.state.lock().unwrap();
        assert!(st.delete("Users", &old_user));
        assert!(st.delete("Groups", &old_team));
    }
    let (ok, out, err) = src.push(&t, &[]);
    assert!(ok, "the second push repairs the target:\n{out}\n{err}");
    assert!(t.count("PUT", 400) > 0 && t.count("GET", 404) > 0, "{out}");
    assert_ne!(user_id(&t, "user1@example.com"), old_user);
    assert_ne!(group_id(&t, "Team 0"), old_team);
    assert_target_matches(&src, &t, &[], Expect::default());
    assert_counts(
        &out,
        2,
        &[("already pushed (journal)", 311), ("created", 2)],
    );
}

/// The mirror does not skip a group change the target refuses. With user1 deleted
/// on a target that cannot be listed, the mirrored change of Team 0 (user299 added)
/// is one PATCH that also names user1's old id, and the target answers 400: the
/// mirror used to drop the refusal silently (user299 never reached Team 0). It now
/// stops there, shows the error, and the next push repairs both.
#[test]
fn quirk_11_mirror_stops_on_a_refused_member_change_and_the_push_repairs() {
    let (t, src, old) = user1_deleted_from_unlistable();
    let r = src.server.client().patch(
        &format!("/Groups/{}", gid(1)),
        &json!({"schemas": [PATCH_OP], "Operations": [
            {"op": "add", "path": "members", "value": [{"value": uid(299)}]}]}),
    );
    assert!(r.status == 200 || r.status == 204, "{}", r.status);
    let deadline = Instant::now() + Duration::from_secs(60);
    let error = loop {
        let v = src.status();
        if let Some(e) = v["state"]["lastError"].as_str() {
            break e.to_owned();
        }
        assert!(Instant::now() < deadline, "the mirror showed no error: {v}");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(
        error.contains("group Team 0") && error.contains("400"),
        "{error}"
    );
    let (ok, out, err) = src.push(&t, &[]);
    assert!(ok, "the push repairs the target:\n{out}\n{err}");
    assert_ne!(user_id(&t, "user1@example.com"), old);
    src.wait_for_mirror();
    assert_target_matches(&src, &t, &[], Expect::default());
}

/// A user added to the directory after user1 was deleted on a target that cannot be
/// listed, with user1 as its manager: its create names user1's old id and the target
/// answers 400. The push sends it without the manager, re-checks the manager's id,
/// creates user1 anew and sets the link (it used to stop on that create for good;
/// the mirror stops on it, as it should).
#[test]
fn quirk_11_new_user_whose_manager_was_deleted_on_an_unlistable_target() {
    let (t, src, old) = user1_deleted_from_unlistable();
    let late = src.server.client().post(
        "/Users",
        &json!({"userName": "late@example.com", "displayName": "Late", "active": true,
        "emails": [{"value": "late@example.com", "type": "work", "primary": true}],
        ENTERPRISE: {"manager": {"value": uid(1)}}}),
    );
    assert_eq!(late.status, 201);
    let (ok, out, err) = src.push(&t, &[]);
    assert!(ok, "the push repairs the target:\n{out}\n{err}");
    let user1 = user_id(&t, "user1@example.com");
    assert_ne!(user1, old);
    let late = &users_named(&t, "late@example.com")[0];
    assert_eq!(
        late[ENTERPRISE]["manager"]["value"],
        user1.as_str(),
        "{late}"
    );
    src.wait_for_mirror();
    assert_target_matches(&src, &t, &[], Expect::default());
}

/// Issue 15 follow-up: a push that stopped after its users (the target refused to
/// create groups) is resumed after user1, user12's manager, was deleted on a target
/// that cannot be listed. The resumed push sets the managers again; the target
/// refuses user12's manager (400: no such user), so the push reads the ids, drops
/// user1's journal entry, creates user1 anew and links user12 to it. It used to
/// stop on that 400 for good.
#[test]
fn quirk_11_manager_deleted_on_an_unlistable_target_before_a_resumed_push() {
    let t = Quirky::start(Quirks {
        refuse_unfiltered_list: true,
        refuse_group_creates: true,
        ..Quirks::default()
    });
    let src = source(&t, SMALL);
    let (ok, out, err) = src.push(&t, &[]);
    assert!(!ok, "the target refused to create groups:\n{out}\n{err}");
    assert_eq!(src.status()["state"]["pushIncomplete"], true);
    let old = user_id(&t, "user1@example.com");
    assert!(t.state.lock().unwrap().delete("Users", &old));
    t.set(|q| q.refuse_group_creates = false);
    let (ok, out, err) = src.push(&t, &[]);
    assert!(ok, "the resumed push repairs the target:\n{out}\n{err}");
    assert!(t.count("PUT", 400) > 0, "user12's manager was refused once");
    assert_ne!(user_id(&t, "user1@example.com"), old);
    assert_target_matches(&src, &t, &[], Expect::default());
    assert_counts(
        &out,
        SMALL.groups() as u64 + 1,
        &[("already pushed (journal)", 299), ("created", 14)],
    );
}

#[test]
fn quirk_10_differences_fail_the_push_and_are_named() {
    let t = Quirky::start(Quirks {
        mangle_display_name: true,
        ..Quirks::default()
    });
    let src = source(&t, SMALL);
    let (ok, out, _) = src.push(&t, &[]);
    assert!(
        !ok,
        "differences found by the closing verification fail the push"
    );
    assert!(
        out.contains("User user0@example.com: displayName: local \"User 0\", target \"USER 0\""),
        "{out}"
    );
    assert_eq!(src.status()["phase"], "mirroring");
    let (ok, _, _) = cli(&src.server.data_dir(), &["migrate", "verify"]);
    assert!(!ok);
}
