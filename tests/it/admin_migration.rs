//! The Migration page's settings and memory (issue 14 points 2 and 8, page side): the
//! migration policy edited on the page with where each value came from and a reset,
//! CSRF-protected and audited, the same stored setting as `migrate policy`; the last
//! readiness result kept across a restart.

use crate::support::admin::*;
use crate::support::*;
use serde_json::{json, Value};

fn policy_json(s: &Server, cfg: &std::path::Path) -> Value {
    let (ok, out, err) = cli(
        &s.data_dir(),
        &[
            "--config",
            cfg.to_str().unwrap(),
            "migrate",
            "policy",
            "show",
            "--json",
        ],
    );
    assert!(ok, "{err}");
    serde_json::from_str(&out).unwrap()
}

/// Posts a Migration page form (with the CSRF token of `page`, the page it is on)
/// and returns the page it leads back to.
fn submit(c: &Client, cookie: &str, page: &str, path: &str, fields: &[(&str, &str)]) -> String {
    let token = csrf(page);
    let mut all = vec![("csrf", token.as_str())];
    all.extend_from_slice(fields);
    let r = post_form(c, path, Some(cookie), &all);
    assert_eq!(r.status, 303, "{}", text(&r));
    text(&get_page(c, "/admin/migration", cookie))
}

/// The text of the `<textarea id="KEY">` on the page.
fn textarea(page: &str, key: &str) -> String {
    let open = format!("<textarea id=\"{key}\"");
    let i = page
        .find(&open)
        .unwrap_or_else(|| panic!("no {key} box: {page}"));
    let start = page[i..].find('>').unwrap() + i + 1;
    let end = page[start..].find("</textarea>").unwrap() + start;
    page[start..end].to_owned()
}

/// The source shown under the `KEY` box ("stored", "config file", "default").
fn source(page: &str, key: &str) -> String {
    let i = page.find(&format!("<textarea id=\"{key}\"")).unwrap();
    attr_after(&page[i..], "data-source=\"").expect("source")
}

#[test]
fn policy_is_edited_on_the_migration_page_with_its_source_and_reset() {
    let cfgdir = tempfile::tempdir().unwrap();
    let cfg = cfgdir.path().join("bridge.toml");
    std::fs::write(&cfg, "[migration]\nallowed_domains = [\"file.example\"]\n").unwrap();
    let (s, cookie) = signed_in_server(&["--config", cfg.to_str().unwrap()]);
    let c = s.client();
    let ada = json!({"userName": "ada", "emails": [{"value": "ada@example.org", "primary": true}]});
    assert_eq!(c.post("/Users", &ada).status, 201);

    let page = text(&get_page(&c, "/admin/migration", &cookie));
    assert_eq!(textarea(&page, "allowed_domains"), "file.example");
    assert_eq!(source(&page, "allowed_domains"), "config file");
    assert_eq!(source(&page, "public_domains"), "default");
    assert!(textarea(&page, "public_domains").contains("gmail.com"));
    assert_eq!(source(&page, "protected_groups"), "default");
    // The explanation reads as one sentence (the trial found runs of spaces in it).
    assert!(
        page.contains("is stored in the database and takes precedence over the config file's <code>[migration]</code>, which takes"),
        "{page}"
    );

    // Without the session's CSRF token nothing is stored.
    let r = post_form(
        &c,
        "/admin/migration/policy",
        Some(&cookie),
        &[("csrf", "wrong"), ("allowed_domains", "example.org")],
    );
    assert_eq!(r.status, 403);
    assert_eq!(policy_json(&s, &cfg)["allowedDomains"]["source"], "file");

    // Saved from the page: the changed field is stored, the unchanged ones are not.
    let public = textarea(&page, "public_domains");
    let groups = textarea(&page, "protected_groups");
    let page = submit(
        &c,
        &cookie,
        &page,
        "/admin/migration/policy",
        &[
            (
                "allowed_domains",
                "example.org\r\n Example.COM, example.org",
            ),
            ("public_domains", &public),
            ("protected_groups", &groups),
        ],
    );
    assert!(page.contains("Policy saved"), "{page}");
    assert_eq!(
        textarea(&page, "allowed_domains"),
        "example.org\nexample.com"
    );
    assert_eq!(source(&page, "allowed_domains"), "stored");
    assert!(page.contains("The config file says file.example"), "{page}");
    let v = policy_json(&s, &cfg);
    assert_eq!(
        v["allowedDomains"]["value"],
        json!(["example.org", "example.com"])
    );
    assert_eq!(v["allowedDomains"]["source"], "stored");
    assert_eq!(v["publicDomains"]["source"], "default");
    assert_eq!(v["protectedGroups"]["source"], "default");

    // In effect at the next check, without a restart: ada's domain is now allowed.
    let page = submit(&c, &cookie, &page, "/admin/migration/check", &[]);
    assert!(page.contains("Ready: nothing blocks"), "{page}");

    // A value that cannot be a domain is refused with the reason; nothing changes.
    let page = submit(
        &c,
        &cookie,
        &page,
        "/admin/migration/policy",
        &[("allowed_domains", "ada@example.org")],
    );
    assert!(
        page.contains("Not saved: allowed_domains:") && page.contains("is not a domain"),
        "{page}"
    );
    assert_eq!(
        policy_json(&s, &cfg)["allowedDomains"]["value"],
        json!(["example.org", "example.com"])
    );

    // Reset: the file's value applies again.
    let page = submit(
        &c,
        &cookie,
        &page,
        "/admin/migration/policy-reset",
        &[("field", "allowed_domains")],
    );
    assert!(
        page.contains("allowed_domains reset: file.example (config file) applies again"),
        "{page}"
    );
    assert_eq!(source(&page, "allowed_domains"), "config file");
    assert_eq!(policy_json(&s, &cfg)["allowedDomains"]["source"], "file");

    // Every change is in the audit trail, by the admin account, refusals with why.
    let activity = text(&get_page(
        &c,
        "/admin/activity?action=migration.policy",
        &cookie,
    ));
    assert!(activity.contains("migration.policy_set"), "{activity}");
    assert!(
        activity.contains("allowed_domains = example.org, example.com"),
        "{activity}"
    );
    assert!(activity.contains("migration.policy_reset"));
    assert!(activity.contains("is not a domain"), "the refusal's reason");
}

/// The readiness result is stored: after a restart the page still shows it (issue 14
/// point 8), and a check run by the CLI while the server is stopped shows up too.
#[test]
fn readiness_result_survives_a_restart() {
    let (mut s, cookie) = signed_in_server(&[]);
    let c = s.client();
    assert_eq!(c.post("/Users", &user_body("carol@gmail.com")).status, 201);
    let page = text(&get_page(&c, "/admin/migration", &cookie));
    assert!(page.contains("Not run yet."), "{page}");
    let r = post_form(
        &c,
        "/admin/migration/check",
        Some(&cookie),
        &[("csrf", &csrf(&page))],
    );
    assert_eq!(r.status, 303);

    s.restart();
    let c = s.client();
    let cookie = login(&c, PASSWORD);
    let page = text(&get_page(&c, "/admin/migration", &cookie));
    assert!(page.contains("id=\"readiness\""), "{page}");
    assert!(
        page.contains("Not ready") && page.contains("carol@gmail.com"),
        "{page}"
    );
    assert!(
        page.contains("1 user uses a public mail provider"),
        "{page}"
    );

    // A check from the CLI with the server stopped is the one shown next.
    assert_eq!(c.post("/Users", &user_body("dan@gmail.com")).status, 201);
    s.stop();
    let (_, out, err) = cli(&s.data_dir(), &["migrate", "check"]);
    assert!(
        out.contains("Migration readiness: BLOCKED (2 users, 0 groups)"),
        "{out}{err}"
    );
    s.restart();
    let c = s.client();
    let cookie = login(&c, PASSWORD);
    let page = text(&get_page(&c, "/admin/migration", &cookie));
    assert!(page.contains("(2 users, 0 groups)"), "{page}");
    assert!(
        page.contains("2 users use a public mail provider"),
        "{page}"
    );
}
