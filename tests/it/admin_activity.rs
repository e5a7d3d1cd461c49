//! The audit trail (issue 14 points 3 and 4) over real HTTPS against the real binary:
//! SCIM writes (done and refused, with the SCIM error's detail), admin-page and CLI
//! actions each leave an entry with actor, client address, the resource's name as it
//! was, outcome and reason; the Activity page searches, filters and pages them; CSV
//! and JSON Lines exports (formula cells defused); the same entries in the log.

use crate::support::admin::*;
use crate::support::*;
use serde_json::{json, Value};
use std::time::Duration;

/// The page at `path` once `ready` holds: a refused SCIM write is audited right
/// after the answer is sent, so its entry may land a commit later (a write that is
/// done has its entry stored with it).
fn page_when(c: &Client, cookie: &str, path: &str, ready: impl Fn(&str) -> bool) -> String {
    wait_until(path, Duration::from_secs(10), || {
        Some(text(&get_page(c, path, cookie))).filter(|p| ready(p))
    })
}

#[test]
fn who_deleted_bob_is_answered_by_name_with_reasons_and_exports() {
    let (s, cookie) = signed_in_server(&[]);
    let c = s.client();
    // A name that a spreadsheet would run as a formula.
    let bob = c.post("/Users", &user_body("=bob@example.com")).json();
    let id = bob["id"].as_str().unwrap().to_owned();
    assert_eq!(c.delete(&format!("/Users/{id}")).status, 204);
    // Refused writes: a conflict, an unknown token.
    c.post("/Users", &user_body("ann@example.com"));
    let dup = c.post("/Users", &user_body("ann@example.com"));
    assert_eq!(dup.status, 409);
    let detail = dup.json()["detail"].as_str().unwrap().to_owned();
    assert_eq!(
        c.with_token("scimb_wrong")
            .post("/Users", &user_body("eve@example.com"))
            .status,
        401
    );

    // The audit answers "who deleted Bob?" although Bob is gone.
    let page = page_when(&c, &cookie, "/admin/activity?q=bob", |p| {
        p.contains("scim.delete")
    });
    assert!(page.contains("scim.create"), "{page}");
    assert!(page.contains("=bob@example.com"));
    assert!(page.contains("127.0.0.1"), "client address shown");
    assert!(
        page.contains(">test <small>(token)</small>"),
        "actor: the token's name: {page}"
    );
    // The dashboard's recent changes name the resource as it was (Bob is gone, so
    // "(deleted)"), with its id beside the name, and the actor the same way.
    let dash = page_when(&c, &cookie, "/admin", |p| p.contains("scim.delete"));
    let changes = &dash[dash.find("id=\"changes\"").expect("recent changes")..];
    let gone_link = format!(
        "<a class=\"gone\" href=\"/admin/users/{id}\">=bob@example.com (deleted)</a> \
         <small class=\"note id\">{id}</small>"
    );
    assert!(changes.contains(&gone_link), "{changes}");
    assert!(page.contains(&gone_link), "the Activity page alike: {page}");
    // Trial 7 item 6: that link leads to a page saying when and by whom Bob was
    // deleted, with his audit entries (410 Gone), not to "Not found".
    let r = get_page(&c, &format!("/admin/users/{id}"), &cookie);
    assert_eq!(r.status, 410);
    let gone = text(&r);
    assert!(
        gone.contains("<title>=bob@example.com (deleted) · scimbridge</title>"),
        "{gone}"
    );
    assert!(
        gone.contains("This user was deleted ")
            && gone.contains(" by <span class=\"actor\" data-kind=\"token\">test <small>(token)</small></span> from 127.0.0.1."),
        "{gone}"
    );
    let history = &gone[gone.find("id=\"history\"").expect("its audit entries")..];
    assert!(
        history.contains("scim.delete") && history.contains("scim.create"),
        "{history}"
    );
    // A user that never existed still answers 404, without a history.
    let r = get_page(&c, "/admin/users/never-here", &cookie);
    assert_eq!(r.status, 404);
    assert!(!text(&r).contains("id=\"history\""));
    // A user still in the directory is not marked.
    let ann = c.post("/Users", &user_body("ann2@example.com")).json();
    let dash = text(&get_page(&c, "/admin", &cookie));
    let ann_id = ann["id"].as_str().unwrap();
    assert!(
        dash.contains(&format!(
            "<a href=\"/admin/users/{ann_id}\">ann2@example.com</a>"
        )),
        "{dash}"
    );
    assert!(
        changes.contains(">test <small>(token)</small>"),
        "{changes}"
    );

    // Refusals carry the SCIM error's detail.
    let refused = page_when(&c, &cookie, "/admin/activity?outcome=refused", |p| {
        p.contains("409 refused: conflict") && p.contains("authentication required")
    });
    assert!(
        refused.contains(&detail.replace('"', "&quot;")),
        "{refused}"
    );
    assert!(refused.contains("authentication required"));
    assert!(!refused.contains("scim.delete"), "only refused entries");

    // The dashboard and the log give the reasons too.
    let dash = text(&get_page(&c, "/admin", &cookie));
    assert!(dash.contains("409 refused: conflict") && dash.contains("127.0.0.1"));
    assert!(dash.contains(&detail.replace('"', "&quot;")));
    s.wait_for_log("scim.delete");
    let log = s.log_text();
    let line = log
        .lines()
        .find(|l| l.contains("scim.delete"))
        .expect("the delete's audit line");
    assert!(
        line.contains("=bob@example.com") && line.contains("done"),
        "{line}"
    );
    assert!(
        line.contains("127.0.0.1") && line.contains("test"),
        "{line}"
    );

    // Admin actions: a token issued and revoked on the page, by the admin account.
    issue_on_page(&c, &cookie, "pager", "read-write");
    assert_eq!(revoke_on_page(&c, &cookie, "pager").status, 303);
    let admin = text(&get_page(
        &c,
        "/admin/activity?actor=admin&action=token.",
        &cookie,
    ));
    assert!(
        admin.contains("token.issue") && admin.contains("token.revoke"),
        "{admin}"
    );
    assert!(admin.contains("pager"));
    // The token the test server runs with was issued by the CLI before start.
    let cli_page = text(&get_page(&c, "/admin/activity?actor=cli", &cookie));
    assert!(
        cli_page.contains("token.issue") && cli_page.contains("Token test"),
        "{cli_page}"
    );

    // The CLI through the running server's control socket: issued and revoked
    // (`--yes`; without a terminal it would not ask anyway), by the OS user.
    let (ok, _, err) = cli(&s.data_dir(), &["token", "issue", "--name", "by-cli"]);
    assert!(ok, "{err}");
    let (ok, out, err) = cli(&s.data_dir(), &["token", "revoke", "by-cli", "--yes"]);
    assert!(ok && out.contains("revoked"), "{out}{err}");
    let cli_page = text(&get_page(&c, "/admin/activity?actor=cli&q=by-cli", &cookie));
    assert!(
        cli_page.contains("token.issue") && cli_page.contains("token.revoke"),
        "{cli_page}"
    );
    let user = std::process::Command::new("id")
        .arg("-un")
        .output()
        .unwrap();
    let user = String::from_utf8_lossy(&user.stdout).trim().to_owned();
    assert!(
        cli_page.contains(&format!(">CLI <small>(unix user {user})</small>")),
        "{cli_page}"
    );

    // CSV: a header, formula cells defused; JSON Lines: one object per line.
    let csv = get_page(&c, "/admin/activity.csv?q=bob", &cookie);
    assert_eq!(csv.status, 200);
    assert!(csv.header("content-type").unwrap().starts_with("text/csv"));
    assert!(csv
        .header("content-disposition")
        .unwrap()
        .contains("attachment"));
    let csv = text(&csv);
    assert!(csv.starts_with("seq,time,actor_kind,actor,client,action"));
    assert!(csv.contains(",'=bob@example.com,"), "{csv}");
    assert!(!csv.contains(",=bob"));
    let jsonl = text(&get_page(
        &c,
        "/admin/activity.jsonl?outcome=refused",
        &cookie,
    ));
    let lines: Vec<Value> = jsonl
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON object per line"))
        .collect();
    assert!(lines.len() >= 2, "{jsonl}");
    assert!(lines.iter().all(|l| l["outcome"] == "refused"));
    assert!(lines
        .iter()
        .any(|l| l["status"] == 409 && l["reason"] == json!(detail) && l["client"] == "127.0.0.1"));
}

#[test]
fn activity_pages_through_the_matches_with_counts() {
    let (s, cookie) = signed_in_server(&[]);
    let c = s.client();
    for i in 0..52 {
        assert_eq!(
            c.post("/Users", &user_body(&format!("p{i:02}@example.com")))
                .status,
            201
        );
    }
    let first = page_when(&c, &cookie, "/admin/activity?action=scim.", |p| {
        p.contains("1–50 of 52")
    });
    assert!(
        first.contains("p51@example.com") && !first.contains("p01@example.com"),
        "newest first"
    );
    assert!(
        first.contains("href=\"/admin/activity?action=scim.&amp;page=2\" rel=\"next\""),
        "{first}"
    );
    let second = text(&get_page(
        &c,
        "/admin/activity?action=scim.&page=2",
        &cookie,
    ));
    assert!(second.contains("51–52 of 52"), "{second}");
    assert!(second.contains("p00@example.com") && second.contains("p01@example.com"));
    assert!(second.contains("rel=\"prev\"") && !second.contains("rel=\"next\""));
    let none = text(&get_page(&c, "/admin/activity?q=nobody-at-all", &cookie));
    assert!(none.contains("0 of 0") && none.contains("Nothing found"));
}

/// The positions of `names` in `page`, which must all be there.
fn order_of(page: &str, names: &[&str]) -> Vec<usize> {
    names
        .iter()
        .map(|n| {
            page.find(n)
                .unwrap_or_else(|| panic!("{n} missing: {page}"))
        })
        .collect()
}

#[test]
fn activity_sorts_by_each_column_with_aria_sort() {
    let (s, cookie) = signed_in_server(&[]);
    let c = s.client();
    let alpha = c.with_token(&issue_on_page(&c, &cookie, "alpha", "read-write"));
    assert_eq!(
        c.post("/Users", &user_body("m-user@example.com")).status,
        201
    );
    assert_eq!(
        alpha
            .post("/Users", &user_body("z-user@example.com"))
            .status,
        201
    );
    assert_eq!(
        c.post("/Users", &user_body("a-user@example.com")).status,
        201
    );
    assert_eq!(
        alpha
            .post("/Users", &user_body("m-user@example.com"))
            .status,
        409
    );
    let base = "/admin/activity?action=scim.";
    let newest = page_when(&c, &cookie, base, |p| p.contains("1–4 of 4"));
    assert!(newest.contains("newest first"), "{newest}");
    assert!(
        newest.contains("<th aria-sort=\"descending\"><a href=\"/admin/activity?action=scim.&amp;order=asc\" data-sort=\"time\">Time ▼</a></th>"),
        "{newest}"
    );
    let rows = |p: &str| order_of(p, &["a-user@", "z-user@", "m-user@"]);
    let r = rows(&newest);
    // Newest first: the refused m-user (by alpha), a-user, z-user, the first m-user.
    assert!(r[2] < r[0] && r[0] < r[1], "newest first: m, a, z");

    let oldest = text(&get_page(&c, &format!("{base}&order=asc"), &cookie));
    assert!(oldest.contains("oldest first"));
    let r = rows(&oldest);
    assert!(r[2] < r[1] && r[1] < r[0], "oldest first: m, z, a");

    // By actor: alpha's entries first, then test's; the heading says so.
    let by_actor = text(&get_page(&c, &format!("{base}&sort=actor"), &cookie));
    assert!(
        by_actor.contains("<th aria-sort=\"ascending\"><a href=\"/admin/activity?action=scim.&amp;sort=actor&amp;order=desc\" data-sort=\"actor\">Actor ▲</a></th>"),
        "{by_actor}"
    );
    assert_eq!(
        by_actor.matches("aria-sort=").count(),
        1,
        "one sorted column"
    );
    let z = by_actor.find("z-user@").unwrap();
    let a = by_actor.find("a-user@").unwrap();
    assert!(z < a, "alpha (z-user) before test (a-user)");
    let desc = text(&get_page(
        &c,
        &format!("{base}&sort=actor&order=desc"),
        &cookie,
    ));
    assert!(desc.contains("aria-sort=\"descending\"") && desc.contains("by actor, Z to A"));
    assert!(desc.find("a-user@").unwrap() < desc.find("z-user@").unwrap());

    // By resource name, and by outcome (done before refused).
    let by_name = text(&get_page(&c, &format!("{base}&sort=resource"), &cookie));
    let r = rows(&by_name);
    assert!(r[0] < r[2] && r[2] < r[1], "a, m, z: {by_name}");
    let by_outcome = text(&get_page(
        &c,
        &format!("{base}&sort=outcome&order=desc"),
        &cookie,
    ));
    let conflict = by_outcome
        .find("409 refused: conflict")
        .expect("the refused write");
    assert!(
        conflict < by_outcome.find("201 ").unwrap(),
        "refused first when descending"
    );
    let by_action = text(&get_page(&c, &format!("{base}&sort=action"), &cookie));
    assert!(by_action.contains("aria-sort=\"ascending\"><a href=\"/admin/activity?action=scim.&amp;sort=action&amp;order=desc\""));

    // The filter form and the pages keep the sort.
    assert!(by_actor.contains("<input type=\"hidden\" name=\"sort\" value=\"actor\">"));
    // Unknown sort values are refused by the query parser as a whole: the page falls
    // back to its defaults rather than failing.
    let odd = get_page(&c, &format!("{base}&sort=nonsense"), &cookie);
    assert_eq!(odd.status, 200);
}

/// The trial: refused creates (409 `uniqueness`, 403 for a read-only token) were
/// audited without the userName or displayName they asked for; a request with a
/// revoked secret read Token "none" in Recent SCIM requests, and its log line said
/// `reason="revoked token"` without naming the token. All are named now (the
/// token's name, never its secret).
#[test]
fn refusals_name_the_resource_asked_for_and_the_revoked_token() {
    let (s, cookie) = signed_in_server(&[]);
    let c = s.client();
    assert_eq!(c.post("/Users", &user_body("ann@example.com")).status, 201);
    assert_eq!(c.post("/Users", &user_body("ann@example.com")).status, 409);
    let reader = c.with_token(&issue_on_page(&c, &cookie, "reader", "read-only"));
    assert_eq!(
        reader.post("/Users", &user_body("bob@example.com")).status,
        403
    );
    let group =
        json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"], "displayName": "Staff"});
    assert_eq!(reader.post("/Groups", &group).status, 403);
    let jsonl = page_when(&c, &cookie, "/admin/activity.jsonl?outcome=refused", |p| {
        p.matches("\"status\":403").count() == 2 && p.contains("\"status\":409")
    });
    let refused: Vec<Value> = jsonl
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let named = |status: u64, rt: &str, name: &str| {
        refused.iter().any(|e| {
            e["status"] == status
                && e["action"] == "scim.create"
                && e["resource_type"] == rt
                && e["resource_name"] == name
        })
    };
    assert!(named(409, "User", "ann@example.com"), "{jsonl}");
    assert!(named(403, "User", "bob@example.com"), "{jsonl}");
    assert!(named(403, "Group", "Staff"), "{jsonl}");
    let page = text(&get_page(&c, "/admin/activity?outcome=refused", &cookie));
    assert!(page.contains("User bob@example.com"), "{page}");

    let okta = issue_on_page(&c, &cookie, "okta", "read-write");
    assert_eq!(revoke_on_page(&c, &cookie, "okta").status, 303);
    assert_eq!(c.with_token(&okta).get("/Users").status, 401);
    let dash = text(&get_page(&c, "/admin", &cookie));
    let requests = &dash[dash.find("id=\"requests\"").expect("recent requests")..];
    // The header row, then the newest request.
    let newest = requests.split("<tr>").nth(2).expect("a request row");
    let newest = &newest[..newest.find("</tr>").unwrap()];
    assert!(
        newest.contains("<td>okta</td>")
            && newest.contains("the secret of the revoked token &quot;okta&quot;")
            && !newest.contains("none"),
        "{newest}"
    );
    let log = s.wait_for_log("reason=\"revoked token\"");
    let line = log
        .lines()
        .find(|l| l.contains("SCIM authentication failed") && l.contains("revoked token"))
        .expect("the refusal's log line");
    // Plain values since the trial (item 4): `token=okta`, no Debug quotes.
    assert!(line.ends_with(" token=okta"), "{line}");
    assert!(!log.contains(&okta), "the secret is never logged");
}

/// Trial 7 item 19: an identity provider whose token field holds "Bearer scimb_…"
/// sends `Authorization: Bearer Bearer <secret>`. It is refused (401) as before, but
/// the client, the log, the audit, Recent SCIM requests and "Needs attention" now say
/// what is wrong with the header instead of "unknown token".
#[test]
fn a_doubled_bearer_scheme_is_refused_and_named_as_such() {
    let (s, cookie) = signed_in_server(&[]);
    let c = s.client();
    let doubled = format!("Bearer Bearer {}", s.token);
    let r = c.send(
        "GET",
        "/scim/v2/Users",
        &[("authorization", doubled.as_str())],
        None,
    );
    assert_scim_error(&r, 401, None);
    let detail = r.json()["detail"].as_str().unwrap().to_owned();
    assert!(
        detail.contains("the Authorization header says Bearer twice"),
        "{detail}"
    );
    assert!(
        !detail.contains(&s.token) && !detail.contains("test"),
        "{detail}"
    );
    // A write with the same header is refused and changes nothing.
    let body = serde_json::to_vec(&user_body("ann@example.com")).unwrap();
    let r = c.send(
        "POST",
        "/scim/v2/Users",
        &[
            ("authorization", doubled.as_str()),
            ("content-type", "application/scim+json"),
        ],
        Some(body),
    );
    assert_eq!(r.status, 401);
    assert_eq!(c.get("/Users").json()["totalResults"], 0);

    let log = s.wait_for_log("says Bearer twice");
    let line = log
        .lines()
        .find(|l| l.contains("SCIM authentication failed"))
        .expect("the refusal's log line");
    assert!(
        line.contains("reason=\"the Authorization header says Bearer twice\"")
            && line.ends_with(" token=test"),
        "{line}"
    );
    assert!(!log.contains(&s.token), "the secret is never logged");

    // The audit entry of the refused write says why, and names the token whose
    // secret followed.
    let jsonl = page_when(&c, &cookie, "/admin/activity.jsonl", |p| {
        p.contains("scim.create")
    });
    let entry: Value = jsonl
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .find(|e| e["action"] == "scim.create")
        .unwrap();
    let reason = entry["reason"].as_str().unwrap_or_default();
    assert!(
        reason.starts_with("the Authorization header says Bearer twice")
            && reason.contains("the token \"test\"'s")
            && reason.contains("remove \"Bearer \""),
        "{entry}"
    );
    assert_eq!(entry["status"], 401, "{entry}");

    let dash = text(&get_page(&c, "/admin", &cookie));
    let requests = &dash[dash.find("id=\"requests\"").expect("recent requests")..];
    let rows: Vec<&str> = requests.split("<tr>").skip(2).take(3).collect();
    assert!(
        rows.iter()
            .filter(|r| r.contains("the Authorization header says Bearer twice"))
            .count()
            == 2,
        "{requests}"
    );
    assert!(
        dash.contains("an Authorization header that says Bearer twice")
            && dash.contains("the secret of the token &quot;test&quot;"),
        "Needs attention: {dash}"
    );
}

/// Trial 7 item 16: deleting a user clears it as the manager of its reports (RFC 7643
/// §4.3), which happened silently. Each report now gets an audit entry
/// (`scim.manager_removed`, by the delete's token, naming the manager), and the
/// delete's own entry names the reports; a Bulk delete leaves the report entries too.
#[test]
fn a_deleted_managers_reports_are_named_in_the_activity() {
    let (s, cookie) = signed_in_server(&[]);
    let c = s.client();
    let ent = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User";
    let user =
        |name: &str, manager: Option<&str>| post_user_with_manager(&c, user_body(name), manager);
    let boss = user("boss@example.com", None);
    let ann = user("ann@example.com", Some(&boss));
    let bob = user("bob@example.com", Some(&boss));
    let other = user("other@example.com", Some(&ann));
    assert_eq!(c.delete(&format!("/Users/{boss}")).status, 204);
    for id in [&ann, &bob] {
        let u = c.get(&format!("/Users/{id}")).json();
        assert!(u[ent]["manager"].is_null(), "{u}");
    }

    let entries = |filter: &str| -> Vec<Value> {
        text(&get_page(
            &c,
            &format!("/admin/activity.jsonl?{filter}"),
            &cookie,
        ))
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
    };
    let removed = entries("action=scim.manager_removed");
    let mut named: Vec<(&str, &str)> = removed
        .iter()
        .map(|e| {
            (
                e["resource_id"].as_str().unwrap(),
                e["resource_name"].as_str().unwrap(),
            )
        })
        .collect();
    named.sort();
    let mut want = vec![
        (ann.as_str(), "ann@example.com"),
        (bob.as_str(), "bob@example.com"),
    ];
    want.sort();
    assert_eq!(named, want, "{removed:#?}");
    for e in &removed {
        assert_eq!(e["actor"], "test", "{e}");
        assert_eq!(e["actor_kind"], "token", "{e}");
        assert_eq!(e["outcome"], "done", "{e}");
        assert_eq!(e["client"], "127.0.0.1", "{e}");
        let reason = e["reason"].as_str().unwrap();
        assert!(
            reason.starts_with(&format!(
                "its manager \"boss@example.com\" (id {boss}) was deleted, so manager was removed"
            )),
            "{reason}"
        );
    }
    let delete = entries("action=scim.delete")
        .into_iter()
        .find(|e| e["resource_id"] == boss.as_str())
        .expect("the delete's entry");
    assert_eq!(
        delete["reason"], "its 2 reports lost their manager: ann@example.com, bob@example.com",
        "{delete}"
    );
    // Shown on the Activity page and in the report's history.
    let page = text(&get_page(
        &c,
        "/admin/activity?action=scim.manager_removed",
        &cookie,
    ));
    assert!(
        page.contains("scim.manager_removed") && page.contains("ann@example.com"),
        "{page}"
    );

    // A Bulk delete (audited as one request) leaves the report's entry all the same.
    let r = c.post(
        "/Bulk",
        &json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:BulkRequest"],
                "Operations": [{"method": "DELETE", "path": format!("/Users/{ann}")}]}),
    );
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert!(c.get(&format!("/Users/{other}")).json()[ent]["manager"].is_null());
    let removed = entries("action=scim.manager_removed");
    let by_bulk = removed
        .iter()
        .find(|e| e["resource_id"] == other.as_str())
        .expect("the Bulk delete's report entry");
    assert_eq!(by_bulk["actor"], "test", "{by_bulk}");
    assert!(
        by_bulk["reason"]
            .as_str()
            .unwrap()
            .starts_with("its manager \"ann@example.com\""),
        "{by_bulk}"
    );
    // Logged as well (the Bulk request has no entry of its own to log them with).
    wait_until(
        "the Bulk report's log line",
        Duration::from_secs(10),
        || {
            s.log_text()
                .lines()
                .any(|l| l.contains("scim.manager_removed") && l.contains("other@example.com"))
                .then_some(())
        },
    );
}
