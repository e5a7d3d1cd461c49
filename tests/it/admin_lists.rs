//! Lists that scale (issue 14 point 9): Users and Groups sorted by name by default,
//! by any column on request, paged with previous/next and "x–y of N" counting the
//! matches (not the directory); a group's members paged, so a 100,000-member group
//! never renders whole; names as page titles.

use crate::support::admin::*;
use crate::support::*;
use serde_json::json;

/// The names in the list's first column, top to bottom.
fn names(page: &str) -> Vec<String> {
    let table = &page[page.find("<table id=\"list\"").expect("list table")..];
    table
        .split("<tr><td><a href=\"")
        .skip(1)
        .filter_map(|row| {
            let start = row.find('>')? + 1;
            let end = row.find("</a>")?;
            Some(row[start..end].to_owned())
        })
        .collect()
}

fn range(page: &str) -> String {
    let i = page.find("id=\"range\">").expect("range") + "id=\"range\">".len();
    let end = page[i..].find('.').unwrap() + i;
    page[i..end].replace("<q>", "").replace("</q>", "")
}

#[test]
fn lists_sort_by_column_and_page_with_match_counts() {
    let (s, cookie) = signed_in_server(&[]);
    let c = s.client();
    // userName order is the reverse of displayName order.
    for i in 0..55 {
        let mut u = user_body(&format!("u{i:02}@example.com"));
        u["displayName"] = json!(format!("Name {:02}", 54 - i));
        assert_eq!(c.post("/Users", &u).status, 201);
    }
    let first = text(&get_page(&c, "/admin/users", &cookie));
    let n = names(&first);
    assert_eq!(n.len(), 50);
    assert_eq!(n[0], "u00@example.com");
    assert_eq!(n[49], "u49@example.com");
    assert_eq!(range(&first), "1–50 of 55 users");
    assert!(first.contains("aria-sort=\"ascending\""), "sorted by name");
    assert!(!first.contains("rel=\"prev\""));
    let next = first
        .split("<a href=\"")
        .find(|a| a.contains("rel=\"next\""))
        .and_then(|a| a.split('"').next())
        .expect("next link")
        .replace("&amp;", "&");
    assert_eq!(next, "/admin/users?page=2");
    let second = text(&get_page(&c, &next, &cookie));
    assert_eq!(
        names(&second),
        ["u50", "u51", "u52", "u53", "u54"].map(|u| format!("{u}@example.com"))
    );
    assert_eq!(range(&second), "51–55 of 55 users");
    assert!(second.contains("rel=\"prev\"") && !second.contains("rel=\"next\""));

    // Column sorting: by name descending, by display name, by last modified.
    let desc = text(&get_page(&c, "/admin/users?order=desc", &cookie));
    assert_eq!(names(&desc)[0], "u54@example.com");
    assert!(desc.contains("aria-sort=\"descending\""));
    let by_display = text(&get_page(&c, "/admin/users?sort=display", &cookie));
    assert_eq!(names(&by_display)[0], "u54@example.com", "Name 00 first");
    let by_modified = text(&get_page(
        &c,
        "/admin/users?sort=modified&order=desc",
        &cookie,
    ));
    assert_eq!(
        names(&by_modified)[0],
        "u54@example.com",
        "the newest first"
    );
    // The heading of the sorted column links to the opposite order.
    assert!(by_display.contains("href=\"/admin/users?sort=display&amp;order=desc\""));

    // A search counts its matches, keeps the sort, and pages within them.
    let searched = text(&get_page(&c, "/admin/users?q=u5&order=desc", &cookie));
    assert_eq!(range(&searched), "1–5 of 5 users matching u5");
    assert_eq!(names(&searched)[0], "u54@example.com");
    let one = text(&get_page(&c, "/admin/users?q=u07", &cookie));
    assert_eq!(range(&one), "1–1 of 1 user matching u07");
    // A page past the end and a nonsense sort show the list, not an error.
    let past = text(&get_page(&c, "/admin/users?page=99", &cookie));
    assert!(past.contains("Nothing found"), "{past}");
    assert_eq!(
        get_page(&c, "/admin/users?sort=nonsense", &cookie).status,
        200
    );

    // Groups: by displayName, with member counts.
    for g in ["Zeta", "alpha", "Mid"] {
        assert_eq!(c.post("/Groups", &json!({"displayName": g})).status, 201);
    }
    let groups = text(&get_page(&c, "/admin/groups", &cookie));
    assert_eq!(names(&groups), ["alpha", "Mid", "Zeta"]);
    assert_eq!(range(&groups), "1–3 of 3 groups");
    assert!(groups.contains("0 members"));
}

#[test]
fn a_large_groups_page_shows_its_members_page_by_page() {
    const MEMBERS: usize = 100_000;
    let (s, cookie) = signed_in_server(&[]);
    let mut export = export::ExportFile::default();
    let group = export.group(json!({"displayName": "All staff"}));
    for i in 0..MEMBERS {
        let id = export.user(json!({"userName": format!("m{i:06}@example.com")}));
        export.member(&group, &id, "User");
    }
    s.import(&export);
    let c = s.client();

    let list = text(&get_page(&c, "/admin/groups", &cookie));
    assert!(list.contains(&format!("{MEMBERS} members")), "{list}");

    let path = format!("/admin/groups/{group}");
    let r = get_page(&c, &path, &cookie);
    assert_eq!(r.status, 200);
    let page = text(&r);
    assert!(
        page.contains("<title>All staff · scimbridge</title>"),
        "name as title"
    );
    assert!(page.contains(&format!("Members ({MEMBERS})")));
    assert!(
        page.contains(&format!("1–100 of {MEMBERS} members")),
        "{page}"
    );
    assert!(page.contains("m000099@example.com") && !page.contains("m000100@example.com"));
    // The whole page stays small: one page of members, not 100,000.
    assert!(r.body.len() < 200_000, "{} bytes", r.body.len());

    let last = text(&get_page(&c, &format!("{path}?page=1000"), &cookie));
    assert!(last.contains(&format!("99901–100000 of {MEMBERS} members")));
    assert!(last.contains("m099999@example.com") && !last.contains("m000000@example.com"));
    assert!(last.contains("rel=\"prev\"") && !last.contains("rel=\"next\""));

    let users = text(&get_page(&c, "/admin/users", &cookie));
    assert!(users.contains(&format!("1–50 of {MEMBERS} users")));
    // A user's page is titled by its userName.
    let first = users
        .split("<tr><td><a href=\"")
        .nth(1)
        .and_then(|row| row.split('"').next())
        .expect("first user link")
        .to_owned();
    let user = text(&get_page(&c, &first, &cookie));
    assert!(user.contains("<title>m000000@example.com · scimbridge</title>"));
}

/// The trial: the Users page's Name column was empty for a user with only
/// name.givenName and name.familyName (Entra ID and Okta send no `formatted`). It is
/// displayName, else `formatted`, else the parts in order; the user's page says it
/// too.
#[test]
fn a_users_name_is_composed_from_its_parts() {
    let (s, cookie) = signed_in_server(&[]);
    let c = s.client();
    let schemas = json!(["urn:ietf:params:scim:schemas:core:2.0:User"]);
    let users = [
        json!({"schemas": schemas, "userName": "ann@example.com",
               "name": {"givenName": "Ann", "familyName": "Lee"}}),
        json!({"schemas": schemas, "userName": "bea@example.com",
               "name": {"honorificPrefix": "Dr.", "givenName": "Bea", "middleName": "M",
                        "familyName": "Kay", "honorificSuffix": "PhD"}}),
        json!({"schemas": schemas, "userName": "cy@example.com",
               "name": {"formatted": "Cy Formatted", "givenName": "Cy"}}),
        json!({"schemas": schemas, "userName": "di@example.com", "displayName": "Di Shown",
               "name": {"givenName": "Di"}}),
    ];
    let mut ids = Vec::new();
    for u in &users {
        let r = c.post("/Users", u);
        assert_eq!(r.status, 201);
        ids.push(r.json()["id"].as_str().unwrap().to_owned());
    }
    let page = text(&get_page(&c, "/admin/users", &cookie));
    for shown in ["Ann Lee", "Dr. Bea M Kay PhD", "Cy Formatted", "Di Shown"] {
        assert!(
            page.contains(&format!("<td>{shown}</td>")),
            "{shown}: {page}"
        );
    }
    let ann = text(&get_page(&c, &format!("/admin/users/{}", ids[0]), &cookie));
    assert!(ann.contains("Ann Lee"), "{ann}");
}

/// Trial 7 item 15: a user's page lists its direct reports (from the manager index,
/// the first 100 and a count), and a group's members are listed by userName with
/// their display name beside it (the trial saw display names or ids only).
#[test]
fn a_users_page_lists_its_reports_and_a_group_its_members_by_user_name() {
    let (s, cookie) = signed_in_server(&[]);
    let c = s.client();
    let user = |name: &str, display: Option<&str>, manager: Option<&str>| -> String {
        let mut body =
            json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"], "userName": name});
        if let Some(d) = display {
            body["displayName"] = json!(d);
        }
        post_user_with_manager(&c, body, manager)
    };
    let boss = user("boss@example.com", None, None);
    let ann = user("ann@example.com", Some("Ann Lee"), Some(&boss));
    let bob = user("bob@example.com", None, Some(&boss));
    let lone = user("lone@example.com", None, None);
    let page = text(&get_page(&c, &format!("/admin/users/{boss}"), &cookie));
    assert!(page.contains("<h2>Direct reports (2)</h2>"), "{page}");
    let reports = &page[page.find("id=\"reports\"").expect("the reports list")..];
    let reports = &reports[..reports.find("</ul>").unwrap()];
    assert!(
        reports.contains(&format!(
            "<a href=\"/admin/users/{ann}\">ann@example.com</a> <small class=\"display\">Ann Lee</small>"
        )) && reports.contains(&format!("<a href=\"/admin/users/{bob}\">bob@example.com</a>")),
        "{reports}"
    );
    assert!(!reports.contains("lone@example.com"), "{reports}");
    let page = text(&get_page(&c, &format!("/admin/users/{lone}"), &cookie));
    assert!(
        page.contains("<h2>Direct reports (0)</h2>") && page.contains("no user names this one"),
        "{page}"
    );

    // More than a page of reports: the first 100 and the count.
    let many: Vec<String> = (0..101)
        .map(|i| user(&format!("r{i:03}@example.com"), None, Some(&lone)))
        .collect();
    let page = text(&get_page(&c, &format!("/admin/users/{lone}"), &cookie));
    assert!(page.contains("<h2>Direct reports (101)</h2>"), "{page}");
    assert!(
        page.contains("The first 100 of 101, in id order."),
        "{page}"
    );
    let listed = many
        .iter()
        .filter(|id| page.contains(&format!("href=\"/admin/users/{id}\"")))
        .count();
    assert_eq!(listed, 100);

    // A group's members by userName, their display name beside it.
    let r = c.post(
        "/Groups",
        &json!({"displayName": "Crew", "members": [{"value": ann}, {"value": bob}]}),
    );
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    let group = r.json()["id"].as_str().unwrap().to_owned();
    let page = text(&get_page(&c, &format!("/admin/groups/{group}"), &cookie));
    assert!(
        page.contains(&format!(
            "<a href=\"/admin/users/{ann}\">ann@example.com</a> <small class=\"display\">Ann Lee</small> <small>User</small>"
        )),
        "{page}"
    );
    assert!(
        page.contains(&format!(
            "<a href=\"/admin/users/{bob}\">bob@example.com</a> <small>User</small>"
        )),
        "{page}"
    );
    assert!(!page.contains("Direct reports"), "a group has none");
}

/// Trial 7 item 14: the directory search ignores accents as well as case ("Jose"
/// finds "José", "Muller" finds "Müller"), a pasted id finds its resource, and the
/// Users list filters active or inactive users (a user without `active` is active).
#[test]
fn the_search_ignores_accents_finds_ids_and_filters_by_state() {
    let (s, cookie) = signed_in_server(&[]);
    let c = s.client();
    let schema = "urn:ietf:params:scim:schemas:core:2.0:User";
    let mut ids = std::collections::HashMap::new();
    for body in [
        json!({"schemas": [schema], "userName": "jalvarez@example.com", "displayName": "José Álvarez"}),
        json!({"schemas": [schema], "userName": "km@example.com", "name": {"givenName": "Karl", "familyName": "Müller"}}),
        json!({"schemas": [schema], "userName": "ann@example.com", "active": false}),
        json!({"schemas": [schema], "userName": "bob@example.com"}),
        json!({"schemas": [schema], "userName": "joseph@example.com", "active": true}),
    ] {
        let r = c.post("/Users", &body);
        assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
        let name = body["userName"].as_str().unwrap().to_owned();
        ids.insert(name, r.json()["id"].as_str().unwrap().to_owned());
    }
    let found = |query: &str| {
        let page = text(&get_page(&c, &format!("/admin/users?{query}"), &cookie));
        match page.contains("<p>Nothing found.</p>") {
            true => Vec::new(),
            false => names(&page),
        }
    };
    assert_eq!(
        found("q=Jose"),
        ["jalvarez@example.com", "joseph@example.com"]
    );
    assert_eq!(found("q=alvarez"), ["jalvarez@example.com"]);
    assert_eq!(found("q=Muller"), ["km@example.com"]);
    assert_eq!(found("q=M%C3%9CLLER"), ["km@example.com"], "MÜLLER");
    assert_eq!(
        found("q=J%C3%B3s%C3%A9"),
        ["jalvarez@example.com", "joseph@example.com"],
        "Jósé"
    );
    // A pasted id, with the spaces a copy may bring.
    let bob = &ids["bob@example.com"];
    assert_eq!(found(&format!("q=+{bob}+")), ["bob@example.com"]);
    // Active and inactive.
    assert_eq!(found("active=inactive"), ["ann@example.com"]);
    assert_eq!(
        found("active=active"),
        [
            "bob@example.com",
            "jalvarez@example.com",
            "joseph@example.com",
            "km@example.com"
        ]
    );
    assert_eq!(found("active="), found(""));
    assert_eq!(found("q=jose&active=inactive"), Vec::<String>::new());
    assert_eq!(found("q=ann&active=inactive"), ["ann@example.com"]);
    let page = text(&get_page(&c, "/admin/users?active=inactive&q=a", &cookie));
    assert_eq!(range(&page), "1–1 of 1 user (inactive only) matching a");
    assert!(
        page.contains("<option value=\"inactive\" selected>inactive users</option>"),
        "{page}"
    );
    // Sorting keeps the state filter.
    assert!(
        page.contains("href=\"/admin/users?q=a&amp;active=inactive&amp;order=desc\""),
        "{page}"
    );
    // Groups: by a pasted id, and without accents.
    let r = c.post("/Groups", &json!({"displayName": "Équipe Zürich"}));
    assert_eq!(r.status, 201);
    let group = r.json()["id"].as_str().unwrap().to_owned();
    c.post("/Groups", &json!({"displayName": "Other"}));
    let groups = |query: &str| {
        names(&text(&get_page(
            &c,
            &format!("/admin/groups?{query}"),
            &cookie,
        )))
    };
    assert_eq!(groups("q=equipe+zurich"), ["Équipe Zürich"]);
    assert_eq!(groups(&format!("q={group}")), ["Équipe Zürich"]);
}
