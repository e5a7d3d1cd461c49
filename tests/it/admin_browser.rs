//! The admin page in a real browser: headless Chromium driven over WebDriver
//! (Debian's `chromium` and `chromium-driver`). The flow an admin follows on a fresh
//! install: open the setup link from the log, set the password, sign in, issue a
//! token and copy its secret, see the identity provider's user arrive, revoke the
//! token, run the migration readiness check. Screenshots of the dashboard, the
//! tokens page and the migration page go to `target/test-artifacts/`.
//!
//! Without Chromium or chromedriver the tests fail, saying how to install them
//! (`.ci/run` does).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::support::admin::{admin_page_addr, setup_link, PASSWORD};
use crate::support::*;
use base64::Engine;
use serde_json::{json, Value};

const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// chromedriver, killed when dropped.
struct Driver {
    child: Child,
    client: Client,
    /// The Chromium binary each session runs.
    chromium: PathBuf,
    /// The sessions' browser profile, removed with the driver.
    profile: tempfile::TempDir,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One WebDriver session.
struct Browser<'a> {
    driver: &'a Driver,
    session: String,
}

impl Driver {
    /// Starts chromedriver; a missing Chromium or chromedriver fails the test.
    fn start() -> Driver {
        let (chromium, chromedriver) = prereq::chromium();
        // A free port: bind, read it, release it for chromedriver.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let child = Command::new(chromedriver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let addr = format!("127.0.0.1:{port}");
        wait_until("chromedriver to listen", Duration::from_secs(20), || {
            std::net::TcpStream::connect(&addr).ok()
        });
        Driver {
            child,
            client: Client::new(&addr, None, String::new()),
            chromium,
            profile: tempfile::tempdir().expect("profile dir"),
        }
    }

    fn call(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        let body = body.map(|b| serde_json::to_vec(&b).unwrap());
        let headers: &[(&str, &str)] = if body.is_some() {
            &[("content-type", "application/json")]
        } else {
            &[]
        };
        let r = self.client.send(method, path, headers, body);
        let v: Value = serde_json::from_slice(&r.body).unwrap_or(Value::Null);
        assert!(
            r.status == 200,
            "WebDriver {method} {path} answered {}: {v}",
            r.status
        );
        v["value"].clone()
    }

    fn session(&self) -> Browser<'_> {
        let profile = self.profile.path();
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "acceptInsecureCerts": true,
            "goog:chromeOptions": {
                "binary": self.chromium,
                "args": [
                    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                    "--no-first-run", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync",
                    "--disable-dev-shm-usage", "--window-size=1280,1000",
                    format!("--user-data-dir={}", profile.display()),
                ]
            }
        }}});
        let v = self.call("POST", "/session", Some(caps));
        Browser {
            driver: self,
            session: v["sessionId"].as_str().expect("session id").to_owned(),
        }
    }
}

impl Browser<'_> {
    fn call(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        self.driver
            .call(method, &format!("/session/{}{path}", self.session), body)
    }

    fn go(&self, url: &str) {
        self.call("POST", "/url", Some(json!({"url": url})));
    }

    fn url(&self) -> String {
        self.call("GET", "/url", None)
            .as_str()
            .unwrap_or("")
            .to_owned()
    }

    fn source(&self) -> String {
        self.call("GET", "/source", None)
            .as_str()
            .unwrap_or("")
            .to_owned()
    }

    fn find(&self, css: &str) -> String {
        let v = self.call(
            "POST",
            "/element",
            Some(json!({"using": "css selector", "value": css})),
        );
        v[ELEMENT].as_str().expect("element id").to_owned()
    }

    fn type_into(&self, css: &str, text: &str) {
        let e = self.find(css);
        self.call(
            "POST",
            &format!("/element/{e}/value"),
            Some(json!({"text": text})),
        );
    }

    fn click(&self, css: &str) {
        let e = self.find(css);
        self.call("POST", &format!("/element/{e}/click"), Some(json!({})));
    }

    fn property(&self, css: &str, name: &str) -> Value {
        let e = self.find(css);
        self.call("GET", &format!("/element/{e}/property/{name}"), None)
    }

    fn css_value(&self, css: &str, name: &str) -> String {
        let e = self.find(css);
        self.call("GET", &format!("/element/{e}/css/{name}"), None)
            .as_str()
            .unwrap_or("")
            .to_owned()
    }

    /// Waits (with a deadline) until the page source satisfies `f`.
    fn wait_for(&self, what: &str, f: impl Fn(&str) -> bool) -> String {
        let mut src = String::new();
        poll(Duration::from_secs(15), || {
            src = self.source();
            f(&src).then(|| src.clone())
        })
        .unwrap_or_else(|| panic!("timed out waiting for {what}; at {}:\n{src}", self.url()))
    }

    /// Waits (with a deadline) until the address satisfies `f`: the navigation that
    /// a click started has happened.
    fn wait_for_url(&self, what: &str, f: impl Fn(&str) -> bool) {
        let mut url = String::new();
        poll(Duration::from_secs(15), || {
            url = self.url();
            f(&url).then_some(())
        })
        .unwrap_or_else(|| panic!("timed out waiting for {what}; at {url}"))
    }

    fn window(&self, width: u32, height: u32) {
        self.call(
            "POST",
            "/window/rect",
            Some(json!({"width": width, "height": height})),
        );
    }

    fn screenshot(&self, dir: &Path, name: &str) -> PathBuf {
        let b64 = self.call("GET", "/screenshot", None);
        let png = base64::engine::general_purpose::STANDARD
            .decode(b64.as_str().expect("screenshot"))
            .expect("base64 PNG");
        assert!(png.starts_with(b"\x89PNG"), "a PNG");
        let path = dir.join(name);
        std::fs::write(&path, png).expect("write screenshot");
        path
    }
}

impl Drop for Browser<'_> {
    fn drop(&mut self) {
        let _ = self
            .driver
            .client
            .send("DELETE", &format!("/session/{}", self.session), &[], None);
    }
}

/// `<target dir>/test-artifacts`, wherever the target directory is.
fn artifacts_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable");
    // <target>/<profile>/deps/<test binary>
    let target = exe
        .ancestors()
        .nth(3)
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target"));
    let dir = target.join("test-artifacts");
    std::fs::create_dir_all(&dir).expect("create target/test-artifacts");
    dir
}

#[test]
fn admin_flow_in_headless_chromium() {
    let artifacts = artifacts_dir();
    let server = Server::start();
    let scim = server.client();
    let driver = Driver::start();
    let b = driver.session();
    let base = format!("https://{}", server.addr);

    let page = set_password_and_sign_in(&b, &server);
    assert!(page.contains(&format!("{base}/scim/v2<")));
    // The stylesheet and the script loaded under the Content-Security-Policy.
    let header_bg = b.css_value("header.top", "background-color");
    assert!(
        header_bg.contains("22, 32, 46"),
        "style.css applied: {header_bg}"
    );
    assert_eq!(
        b.property("button[data-copy='scim-url']", "hidden"),
        json!(false),
        "copy.js ran and showed the copy button"
    );

    // Issue a token; its secret is on the page once. A name with a space is
    // refused by the browser already (the field's pattern states the rule).
    b.go(&format!("{base}/admin/tokens"));
    let mismatch = b.call(
        "POST",
        "/execute/sync",
        Some(
            json!({"script": "const n = document.getElementById('name'); n.value = 'browser idp'; \
            const bad = n.validity.patternMismatch; n.value = 'browser-idp'; \
            return [bad, n.validity.valid]", "args": []}),
        ),
    );
    assert_eq!(
        mismatch,
        json!([true, true]),
        "the name's pattern compiles and applies"
    );
    b.call(
        "POST",
        "/execute/sync",
        Some(json!({"script": "document.getElementById('name').value = ''", "args": []})),
    );
    b.type_into("#name", "browser-idp");
    b.click("form[action='/admin/tokens'] button[type=submit]");
    b.wait_for("the issued token", |s| s.contains("id=\"secret\""));
    let shown_secret = |b: &Browser<'_>| -> String {
        let v = b.property("#secret", "value");
        v.as_str().expect("the secret on the page").to_owned()
    };
    let secret = shown_secret(&b);
    assert!(secret.starts_with("scimb_"), "{secret}");
    assert_eq!(
        b.property("button[data-copy='secret']", "hidden"),
        json!(false)
    );
    let shot_tokens = b.screenshot(&artifacts, "admin-tokens.png");

    // The identity provider uses it; the user shows up in the Users view.
    let idp = scim.with_token(&secret);
    let r = idp.post("/Users", &user_body("grace.hopper@gmail.com"));
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    b.go(&format!("{base}/admin/users"));
    b.type_into("input[name=q]", "grace");
    b.click("form.search button");
    b.wait_for_url("the search results", |u| u.contains("q=grace"));
    let list = b.wait_for("the user in the list", |s| {
        s.contains("grace.hopper@gmail.com")
    });
    // Its Name is composed from givenName and familyName (the IdP sent no
    // `formatted`; the trial saw an empty column).
    assert!(
        list.contains("<td>Test grace.hopper@gmail.com</td>"),
        "{list}"
    );
    b.click("table a[href^='/admin/users/']");
    b.wait_for("the user's detail", |s| {
        s.contains("SCIM representation") && s.contains("grace.hopper@gmail.com")
    });

    // A secret no token has: counted on the dashboard's chart apart from the tokens.
    assert_eq!(scim.with_token("scimb_unknown").get("/Users").status, 401);

    // Rotate it: a successor under the same name, the old secret still valid and
    // shown as superseded with its last use, until it is revoked after a question.
    b.go(&format!("{base}/admin/tokens"));
    b.click("tr[data-token='browser-idp'] form[action='/admin/tokens/rotate'] button");
    b.wait_for("the successor", |s| s.contains("id=\"rotated\""));
    let successor = shown_secret(&b);
    assert_ne!(successor, secret);
    let shot_rotated = b.screenshot(&artifacts, "admin-tokens-rotated.png");
    let next = scim.with_token(&successor);
    assert_eq!(next.get("/Users").status, 200);
    assert_eq!(
        idp.get("/Users").status,
        200,
        "the superseded secret still works"
    );
    b.click("tr[data-token='browser-idp'][data-state='superseded'] button.danger");
    let ask = b.wait_for("the question", |s| s.contains("id=\"confirm-revoke\""));
    assert!(ask.contains("superseded by a rotation"), "{ask}");
    assert!(
        !ask.contains("Last used: never"),
        "its last use is named: {ask}"
    );
    let shot_confirm = b.screenshot(&artifacts, "admin-revoke-confirm.png");
    b.click("#confirm-revoke button.danger");
    b.wait_for("the revocation", |s| {
        s.contains("Revoked the superseded token")
    });
    assert_scim_error(&idp.get("/Users"), 401, None);
    assert_eq!(next.get("/Users").status, 200);
    let idp = next;

    // Revoke the successor in the browser: the next SCIM request is refused.
    b.go(&format!("{base}/admin/tokens"));
    b.click("tr[data-token='browser-idp'][data-state='active'] button.danger");
    b.wait_for("the question", |s| s.contains("id=\"confirm-revoke\""));
    assert_eq!(idp.get("/Users").status, 200, "asking revokes nothing");
    b.click("#confirm-revoke button.danger");
    b.wait_for("the revocation", |s| s.contains("Revoked the token"));
    assert_scim_error(&idp.get("/Users"), 401, None);

    b.go(&format!("{base}/admin"));
    let page = b.wait_for("the dashboard", |s| s.contains("Recent SCIM requests"));
    assert!(page.contains("401 denied: no valid token") && page.contains("201 ok"));
    // The revoked secret's refusal names its token (it read "none").
    assert!(
        page.contains("the secret of the revoked token \"browser-idp\""),
        "{page}"
    );
    let summary = b.property("#traffic-summary", "innerText");
    let summary = summary.as_str().unwrap_or_default();
    assert!(
        summary.contains("with a token of this bridge, 1 with no recognised token"),
        "{summary}"
    );
    assert!(
        page.contains("<b>1</b> user<small>"),
        "counts follow the directory"
    );
    // The requests-per-hour chart is drawn (inline SVG, no script).
    assert!(page.contains("id=\"chart-all\"") && page.contains("SCIM requests per hour"));
    let chart_width = b
        .call(
            "POST",
            "/execute/sync",
            Some(json!({"script": "return document.getElementById('chart-all').getBoundingClientRect().width", "args": []})),
        )
        .as_f64()
        .unwrap_or(0.0);
    assert!(
        chart_width > 100.0,
        "the chart is laid out: {chart_width}px"
    );
    // The revoked secrets the IdP kept sending are named under "Needs attention", and
    // their past hours stay on the chart, marked revoked (the trial: both vanished).
    let attention = b.property("#attention", "innerText");
    let attention = attention.as_str().unwrap_or_default();
    assert!(
        attention.contains("with a token that is not valid")
            && attention.contains("the revoked token \"browser-idp\""),
        "{attention}"
    );
    assert!(
        page.contains("id=\"traffic-by-token\"")
            && page.contains("<li data-token=\"browser-idp\"><b>browser-idp</b> <span class=\"pill warn\">revoked</span>"),
        "{page}"
    );
    let shot_dashboard = b.screenshot(&artifacts, "admin-dashboard.png");

    // The Activity page: every write with who did it, filtered to the admin's own.
    b.go(&format!("{base}/admin/activity"));
    b.wait_for("the activity page", |s| s.contains("id=\"range\""));
    b.click("select#actor option[value='admin']");
    b.click("form.filters button");
    b.wait_for_url("the filtered activity", |u| u.contains("actor=admin"));
    let page = b.wait_for("the admin's entries", |s| s.contains("token.revoke"));
    assert!(page.contains("token.issue") && page.contains("browser-idp"));
    assert!(!page.contains("scim.create"), "filtered to the admin");
    let shot_activity = b.screenshot(&artifacts, "admin-activity.png");
    // Its columns sort too, and say so.
    b.click("th a[data-sort='actor']");
    b.wait_for_url("the activity by actor", |u| u.contains("sort=actor"));
    let page = b.wait_for("the sorted activity", |s| {
        s.contains("aria-sort=\"ascending\"")
    });
    assert!(page.contains("by actor, A to Z"), "{page}");

    // The Users list sorts by a column heading and says which one.
    for name in ["ada@example.com", "bob@example.com"] {
        assert_eq!(scim.post("/Users", &user_body(name)).status, 201);
    }
    b.go(&format!("{base}/admin/users"));
    let page = b.wait_for("the users list", |s| s.contains("id=\"range\""));
    assert!(page.contains("1–3 of 3 users"), "{page}");
    b.click("th a[data-sort='name']");
    b.wait_for_url("the descending sort", |u| u.contains("order=desc"));
    let page = b.wait_for("the sorted list", |s| {
        s.contains("aria-sort=\"descending\"")
    });
    let (g, a) = (
        page.find("grace.hopper@gmail.com").unwrap(),
        page.find("ada@example.com").unwrap(),
    );
    assert!(g < a, "descending by userName");
    let shot_users = b.screenshot(&artifacts, "admin-users-sorted.png");

    // The Tokens page: the test token's requests, errors and its own chart.
    b.go(&format!("{base}/admin/tokens"));
    let page = b.wait_for("the token's traffic", |s| {
        s.contains("<tr data-token=\"test\"") && s.contains("class=\"requests\"")
    });
    let row = &page[page.find("<tr data-token=\"test\"").unwrap()..];
    // Its last use is this test's own traffic: "just now", or a few minutes ago
    // when a loaded machine made the browser flow slow (never hours, never "never").
    let recent = row.contains("just now") || (1..=9).any(|m| row.contains(&format!("{m} minute")));
    assert!(row.contains("<svg") && recent, "{row}");
    let shot_tokens_liveness = b.screenshot(&artifacts, "admin-tokens-liveness.png");

    // The migration policy is a setting on the Migration page.
    b.go(&format!("{base}/admin/migration"));
    b.wait_for("the policy form", |s| s.contains("id=\"allowed_domains\""));
    b.type_into("textarea#allowed_domains", "example.com");
    b.click("form[action='/admin/migration/policy'] button");
    let page = b.wait_for("the saved policy", |s| s.contains("Policy saved"));
    assert!(page.contains("data-source=\"stored\""), "{page}");

    // The migration page: the readiness check names the blocking user.
    b.go(&format!("{base}/admin/migration"));
    b.click("form[action='/admin/migration/check'] button");
    let page = b.wait_for("the readiness report", |s| s.contains("id=\"readiness\""));
    assert!(page.contains("Not ready"), "blockers expected");
    assert!(page.contains("grace.hopper@gmail.com"));
    assert!(page.contains("aria-current=\"step\""));
    assert!(page.contains("id=\"guide\"") && !page.contains("/admin/migration/cutover"));
    let shot_migration = b.screenshot(&artifacts, "admin-migration.png");

    // On a phone-sized window the same page still lays out.
    b.window(390, 844);
    b.go(&format!("{base}/admin"));
    b.wait_for("the dashboard", |s| {
        s.contains("Connect your identity provider")
    });
    let width: f64 = b
        .call(
            "POST",
            "/execute/sync",
            Some(json!({"script": "return document.documentElement.scrollWidth", "args": []})),
        )
        .as_f64()
        .unwrap_or(0.0);
    let shot_phone = b.screenshot(&artifacts, "admin-dashboard-phone.png");
    assert!(
        width <= 400.0,
        "no horizontal scrolling on a phone: {width}px"
    );
    for (path, file) in [
        ("/admin/activity", "admin-activity-phone.png"),
        ("/admin/migration", "admin-migration-phone.png"),
        ("/admin/users", "admin-users-phone.png"),
        ("/admin/tokens", "admin-tokens-phone.png"),
    ] {
        b.go(&format!("{base}{path}"));
        b.wait_for(path, |s| s.contains("</main>"));
        let width = b
            .call(
                "POST",
                "/execute/sync",
                Some(json!({"script": "return document.documentElement.scrollWidth", "args": []})),
            )
            .as_f64()
            .unwrap_or(0.0);
        let shot = b.screenshot(&artifacts, file);
        assert!(
            width <= 400.0,
            "{path}: no horizontal scrolling on a phone: {width}px"
        );
        eprintln!("screenshot: {}", shot.display());
    }

    for p in [
        shot_dashboard,
        shot_tokens,
        shot_rotated,
        shot_confirm,
        shot_migration,
        shot_phone,
        shot_activity,
        shot_users,
        shot_tokens_liveness,
    ] {
        eprintln!("screenshot: {}", p.display());
    }
}

/// The trial: a user's page showed its manager as a bare id, and the dashboard's last
/// SCIM requests showed resources by id. Both name them now, linked to their pages
/// (the id kept as the link's title and as secondary text), and say plainly when a
/// resource is no longer in the directory.
#[test]
fn managers_and_last_requests_are_shown_by_name_in_headless_chromium() {
    let server = Server::start();
    let scim = server.client();
    let driver = Driver::start();
    let b = driver.session();
    let base = format!("https://{}", server.addr);
    set_password_and_sign_in(&b, &server);

    let created = |body: &Value| -> String {
        let r = scim.post("/Users", body);
        assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
        r.json()["id"].as_str().unwrap().to_owned()
    };
    let mut boss = user_body("boss@example.com");
    boss["displayName"] = json!("Big Boss");
    let boss_id = created(&boss);
    let ent = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User";
    let mut report = user_body("report@example.com");
    report["schemas"].as_array_mut().unwrap().push(json!(ent));
    report[ent] = json!({"department": "R&D", "manager": {"value": boss_id}});
    let report_id = created(&report);
    let r = scim.post(
        "/Groups",
        &json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"], "displayName": "Temp crew"}),
    );
    assert_eq!(r.status, 201);
    let group_id = r.json()["id"].as_str().unwrap().to_owned();
    assert_eq!(scim.delete(&format!("/Groups/{group_id}")).status, 204);
    assert_eq!(scim.get("/Users/no-such-user").status, 404);

    // The report's page: the manager by userName and displayName, linked.
    let report_url = format!("{base}/admin/users/{report_id}");
    b.go(&report_url);
    let page = b.wait_for("the report's page", |s| s.contains("id=\"manager\""));
    let text = b.property("#manager", "innerText");
    assert_eq!(text, json!("boss@example.com"), "{page}");
    let row = b.property("table.facts tr:has(#manager)", "innerText");
    let row = row.as_str().unwrap_or_default();
    assert!(
        row.starts_with("Manager") && row.contains("boss@example.com (Big Boss)"),
        "{row}"
    );
    assert_eq!(
        b.property("#manager", "title"),
        json!(format!("id {boss_id}"))
    );
    // Not again as a bare id among the extension attributes (the department is).
    assert!(page.contains("<th>department</th>"), "{page}");
    assert!(!page.contains("<th>manager</th>"), "{page}");
    b.click("#manager");
    b.wait_for_url("the manager's page", |u| {
        u.ends_with(&format!("/admin/users/{boss_id}"))
    });
    b.wait_for("the manager's page", |s| s.contains("SCIM representation"));
    // Trial 7 item 15: the manager's page is titled by its userName and lists its
    // direct reports, linked.
    assert_eq!(
        b.property("title", "innerText"),
        json!("boss@example.com · scimbridge")
    );
    assert_eq!(
        b.property("#reports", "innerText"),
        json!("report@example.com")
    );
    b.click(&format!("#reports a[href='/admin/users/{report_id}']"));
    b.wait_for_url("the report's page from the boss's", |u| u == report_url);

    // The dashboard's last requests: names linked, a deleted group by the name it had
    // (from the audit) and said to be deleted, an unknown id said to be so.
    b.go(&format!("{base}/admin"));
    b.wait_for("the last requests", |s| s.contains("id=\"requests\""));
    let rows = |b: &Browser<'_>| -> Vec<String> {
        let v = b.call(
            "POST",
            "/execute/sync",
            Some(json!({"script": "return [...document.querySelectorAll('#requests tbody tr')].map(r => r.innerText)", "args": []})),
        );
        v.as_array()
            .unwrap()
            .iter()
            .map(|t| t.as_str().unwrap().to_owned())
            .collect()
    };
    let find = |rows: &[String], what: &[&str]| -> String {
        rows.iter()
            .find(|r| what.iter().all(|w| r.contains(w)))
            .unwrap_or_else(|| panic!("no row with {what:?} in {rows:#?}"))
            .clone()
    };
    let shown = rows(&b);
    find(
        &shown,
        &["POST", "Users boss@example.com", &boss_id, "201 ok"],
    );
    find(&shown, &["POST", "Users report@example.com", &report_id]);
    find(&shown, &["POST", "Groups Temp crew (deleted)", &group_id]);
    find(&shown, &["DELETE", "Groups Temp crew (deleted)", &group_id]);
    find(
        &shown,
        &["GET", "Users", "no-such-user", "not in the directory"],
    );
    // Trial 7 item 6: a deleted group's link no longer leads to "Not found" but to a
    // page that says it was deleted, when and by which token, with its audit entries.
    b.click(&format!(
        "#requests a.gone[href='/admin/groups/{group_id}']"
    ));
    b.wait_for_url("the deleted group's page", |u| {
        u.ends_with(&format!("/admin/groups/{group_id}"))
    });
    let page = b.wait_for("the deleted group's page", |s| s.contains("id=\"deleted\""));
    assert_eq!(
        b.property("h1", "innerText"),
        json!("Temp crew (deleted)"),
        "{page}"
    );
    let said = b.property("#deleted", "innerText");
    let said = said.as_str().unwrap_or_default();
    assert!(
        said.starts_with("This group was deleted ")
            && said.contains("by test (token) from 127.0.0.1")
            && said.contains(&group_id),
        "{said}"
    );
    let history = b.property("#history", "innerText");
    let history = history.as_str().unwrap_or_default();
    assert!(
        history.contains("scim.delete")
            && history.contains("scim.create")
            && history.contains("Temp crew"),
        "{history}"
    );
    assert!(!page.contains("There is no such admin page"), "{page}");
    b.go(&format!("{base}/admin"));
    b.wait_for("the last requests", |s| s.contains("id=\"requests\""));
    b.click(&format!("#requests a[href='/admin/users/{report_id}']"));
    b.wait_for_url("the report's page", |u| u == report_url);

    // The manager leaves: the report's page never shows the id alone (the link is
    // cleared, or the id is said to be no user of this directory).
    assert_eq!(scim.delete(&format!("/Users/{boss_id}")).status, 204);
    b.go(&report_url);
    let page = b.wait_for("the report's page", |s| s.contains("SCIM representation"));
    if page.contains("id=\"manager\"") {
        let row = b.property("table.facts tr:has(#manager)", "innerText");
        let row = row.as_str().unwrap_or_default();
        assert!(
            row.contains("not a user of this directory") && row.contains("was deleted"),
            "{row}"
        );
    }
    assert!(!page.contains("boss@example.com"), "{page}");
    b.go(&format!("{base}/admin"));
    b.wait_for("the last requests", |s| s.contains("id=\"requests\""));
    let shown = rows(&b);
    find(
        &shown,
        &["POST", "Users boss@example.com (deleted)", &boss_id],
    );
    find(
        &shown,
        &["DELETE", "Users boss@example.com (deleted)", &boss_id],
    );
    assert!(
        !shown
            .iter()
            .any(|r| r.contains("boss@example.com") && !r.contains("(deleted)")),
        "{shown:#?}"
    );
    b.call(
        "POST",
        "/execute/sync",
        Some(json!({"script": "document.getElementById('requests').scrollIntoView()", "args": []})),
    );
    let shot = b.screenshot(&artifacts_dir(), "admin-dashboard-requests.png");
    eprintln!("screenshot: {}", shot.display());
}

/// Behind a reverse proxy (TLS off, `public_url` https) the session cookie is
/// `Secure`, and the admin page is opened on this machine's own plain listener
/// (through an SSH tunnel, as the README says). Chromium keeps a Secure cookie for
/// http://127.0.0.1, so signing in there still works, and the cookie it holds is
/// Secure and HttpOnly.
#[test]
fn behind_a_proxy_the_secure_session_cookie_works_on_the_local_listener_in_headless_chromium() {
    let server = Server::start_with(&["--tls", "off", "--public-url", "https://scim.example.com"]);
    let addr = admin_page_addr(&server);
    let driver = Driver::start();
    let b = driver.session();
    assert!(
        setup_link(&server).starts_with(&format!("http://{addr}/admin/setup")),
        "the setup link names the local listener"
    );
    set_password_and_sign_in(&b, &server);
    let cookies = b.call("GET", "/cookie", None);
    let session = cookies
        .as_array()
        .and_then(|all| all.iter().find(|c| c["name"] == "scimbridge_admin"))
        .unwrap_or_else(|| panic!("no session cookie in {cookies}"));
    assert_eq!(session["secure"], json!(true), "{session}");
    assert_eq!(session["httpOnly"], json!(true), "{session}");
    // The session holds on the next page.
    b.go(&format!("http://{addr}/admin/tokens"));
    b.wait_for("the Tokens page", |s| s.contains("Issue a token"));
    assert!(b.url().ends_with("/admin/tokens"), "{}", b.url());
}

/// First start: the setup link from the log sets the password, then sign in.
/// Returns the dashboard's source.
fn set_password_and_sign_in(b: &Browser<'_>, server: &Server) -> String {
    b.go(&setup_link(server));
    b.type_into("#password", PASSWORD);
    b.type_into("#confirm", PASSWORD);
    b.click("form[action='/admin/setup'] button[type=submit]");
    b.wait_for("the sign-in page", |s| s.contains("The password is set"));
    // The setup page named the first account "admin" (its default); the sign-in page
    // has it filled in and the cursor in the password field, so the admin types only
    // the password (the trial typed the name again).
    assert_eq!(b.property("#name", "value"), json!("admin"));
    let focused = b.call(
        "POST",
        "/execute/sync",
        Some(json!({"script": "return document.activeElement.id", "args": []})),
    );
    assert_eq!(
        focused,
        json!("password"),
        "the password field has the focus"
    );
    b.type_into("#password", PASSWORD);
    b.click("form[action='/admin/login'] button[type=submit]");
    b.wait_for("the dashboard", |s| {
        s.contains("Connect your identity provider")
    })
}

/// Loads `path` until the page satisfies `f` (the page shows background progress
/// only on reload).
fn reload_until(b: &Browser<'_>, url: &str, what: &str, f: impl Fn(&str) -> bool) -> String {
    let mut src = String::new();
    poll(Duration::from_secs(60), || {
        b.go(url);
        src = b.source();
        f(&src).then(|| src.clone())
    })
    .unwrap_or_else(|| panic!("timed out waiting for {what}:\n{src}"))
}

#[test]
fn migration_push_and_cut_over_in_headless_chromium() {
    let artifacts = artifacts_dir();
    let cfgdir = tempfile::tempdir().expect("config dir");
    let cfg = cfgdir.path().join("source.toml");
    std::fs::write(&cfg, "[migration]\nallowed_domains = [\"example.com\"]\n").unwrap();
    let server = Server::start_with(&["--config", cfg.to_str().unwrap()]);
    let target = Server::start();
    let scim = server.client();
    let mut ids = Vec::new();
    for i in 0..30 {
        let r = scim.post("/Users", &user_body(&format!("m{i}@example.com")));
        assert_eq!(r.status, 201);
        ids.push(r.json()["id"].as_str().unwrap().to_owned());
    }
    let members: Vec<Value> = ids.iter().take(10).map(|id| json!({"value": id})).collect();
    assert_eq!(
        scim.post(
            "/Groups",
            &json!({"displayName": "Engineering", "members": members})
        )
        .status,
        201
    );

    let driver = Driver::start();
    let b = driver.session();
    let base = format!("https://{}", server.addr);
    set_password_and_sign_in(&b, &server);

    // Readiness: nothing blocks.
    let migration = format!("{base}/admin/migration");
    b.go(&migration);
    b.click("form[action='/admin/migration/check'] button");
    let page = b.wait_for("the readiness report", |s| s.contains("id=\"readiness\""));
    assert!(!page.contains("Not ready"), "no blockers expected");
    assert!(page.contains("/admin/migration/push") && !page.contains("/admin/migration/verify"));
    let shot_checked = b.screenshot(&artifacts, "admin-migration-checked.png");
    eprintln!("screenshot: {}", shot_checked.display());

    // Push into the second bridge from the page; it mirrors and, having read the
    // target back without a difference, shows "verified".
    let ca = std::fs::read_to_string(target.data_dir().join("tls/cert.pem")).unwrap();
    b.type_into("#target", &target.base);
    b.type_into("#token", &target.token);
    b.type_into("#cacert", &ca);
    b.click("form[action='/admin/migration/push'] button[type=submit]");
    // Wait for the push job itself to be done, not just the state: a second step
    // is refused while one runs.
    let page = reload_until(&b, &migration, "the finished push", |s| {
        s.contains("aria-current=\"step\">verified<") && s.contains("pill ok\">done")
    });
    assert!(page.contains("30"), "push progress counts the users");
    assert!(
        page.contains("/admin/migration/cutover") && !page.contains("/admin/migration/check\"")
    );
    let shot_push = b.screenshot(&artifacts, "admin-migration-verified.png");
    let tc = target.client();
    assert_eq!(tc.get("/Users?count=0").json()["totalResults"], 30);

    // A change made now reaches the target before the cut-over.
    assert_eq!(scim.delete(&format!("/Users/{}", ids[29])).status, 204);

    // Cut over: the page wants the target URL typed exactly.
    b.type_into(
        "form[action='/admin/migration/cutover'] #confirm",
        &target.base,
    );
    b.click("form[action='/admin/migration/cutover'] button[type=submit]");
    let page = reload_until(&b, &migration, "the cut-over", |s| {
        s.contains("aria-current=\"step\">cut over<")
    });
    assert!(
        page.contains("it can be decommissioned"),
        "decommission steps shown"
    );
    assert!(page.contains("Tenant URL") && page.contains(&target.base));
    let shot_cut = b.screenshot(&artifacts, "admin-migration-cut-over.png");
    assert_eq!(
        tc.get("/Users?count=0").json()["totalResults"],
        29,
        "the delete was mirrored"
    );
    let refused = scim.post("/Users", &user_body("late@example.com"));
    assert_scim_error(&refused, 410, None);
    for p in [shot_push, shot_cut] {
        eprintln!("screenshot: {}", p.display());
    }
}
