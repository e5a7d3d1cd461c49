//! Query and change semantics over HTTP, one concern per test: the filter grammar,
//! sorting and paging, attribute projection, `.search`, PATCH, PUT, ETags, and that
//! bad input is answered with a SCIM error rather than a 500. The core's unit tests
//! cover the many small cases; these check that the HTTP layer wires them up.

use crate::support::{assert_scim_error, Client, Resp, Server};
use serde_json::{json, Value};

const PATCH_OP: &str = "urn:ietf:params:scim:api:messages:2.0:PatchOp";
const ENTERPRISE: &str = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User";

/// `path?name=value&…` with the values percent-encoded.
fn with_query(path: &str, params: &[(&str, &str)]) -> String {
    let mut ser = form_urlencoded::Serializer::new(String::new());
    for (k, v) in params {
        ser.append_pair(k, v);
    }
    format!("{path}?{}", ser.finish())
}

fn list(c: &Client, path: &str, params: &[(&str, &str)]) -> Value {
    let r = c.get(&with_query(path, params));
    assert_eq!(r.status, 200, "{params:?}: {}", text(&r));
    r.json()
}

fn text(r: &Resp) -> String {
    String::from_utf8_lossy(&r.body).into_owned()
}

/// The `userName`s a user filter selects, sorted.
fn user_names(c: &Client, filter: &str) -> Vec<String> {
    let j = list(c, "/Users", &[("filter", filter)]);
    let mut names: Vec<String> = j["Resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["userName"].as_str().unwrap().to_owned())
        .collect();
    names.sort();
    assert_eq!(j["totalResults"], names.len(), "{filter}");
    names
}

fn create(c: &Client, path: &str, body: Value) -> Value {
    let r = c.post(path, &body);
    assert_eq!(r.status, 201, "{}", text(&r));
    r.json()
}

fn patch_body(ops: Value) -> Value {
    json!({"schemas": [PATCH_OP], "Operations": ops})
}

/// Three users with distinct names, titles, emails, activity and employee numbers.
fn seed_users(c: &Client) -> Vec<String> {
    let users = [
        json!({"userName": "alice@example.com", "externalId": "Ext-A", "title": "Engineer",
               "name": {"givenName": "Alice", "familyName": "Archer"}, "active": true,
               "emails": [{"value": "alice@example.com", "type": "work", "primary": true},
                          {"value": "alice@home.org", "type": "home"}],
               ENTERPRISE: {"employeeNumber": "100", "department": "R&D"}}),
        json!({"userName": "bob@example.com", "externalId": "ext-b", "title": "Manager",
               "name": {"givenName": "Bob", "familyName": "Baker"}, "active": false,
               "emails": [{"value": "bob@example.org", "type": "work"}],
               ENTERPRISE: {"employeeNumber": "200", "department": "Sales"}}),
        json!({"userName": "carol@sample.net", "title": "Engineer",
               "name": {"givenName": "Carol", "familyName": "Cooper"}, "active": true}),
    ];
    users
        .into_iter()
        .map(|u| create(c, "/Users", u)["id"].as_str().unwrap().to_owned())
        .collect()
}

// ---------------------------------------------------------------------------------
// Filters

#[test]
fn filter_comparison_operators() {
    let s = Server::start();
    let c = s.client();
    seed_users(&c);
    let all = ["alice@example.com", "bob@example.com", "carol@sample.net"];
    assert_eq!(user_names(&c, r#"title eq "Engineer""#), [all[0], all[2]]);
    assert_eq!(user_names(&c, r#"title ne "Engineer""#), [all[1]]);
    assert_eq!(user_names(&c, r#"userName co "example""#), [all[0], all[1]]);
    assert_eq!(user_names(&c, r#"userName sw "car""#), [all[2]]);
    assert_eq!(user_names(&c, r#"userName ew ".net""#), [all[2]]);
    assert_eq!(user_names(&c, "externalId pr"), [all[0], all[1]]);
    assert_eq!(user_names(&c, r#"name.familyName gt "Baker""#), [all[2]]);
    assert_eq!(
        user_names(&c, r#"name.familyName ge "Baker""#),
        [all[1], all[2]]
    );
    assert_eq!(user_names(&c, r#"name.familyName lt "Baker""#), [all[0]]);
    assert_eq!(
        user_names(&c, r#"name.familyName le "Baker""#),
        [all[0], all[1]]
    );
}

#[test]
fn filter_and_or_not_and_parentheses() {
    let s = Server::start();
    let c = s.client();
    seed_users(&c);
    assert_eq!(
        user_names(&c, r#"title eq "Engineer" and active eq true"#),
        ["alice@example.com", "carol@sample.net"]
    );
    assert_eq!(
        user_names(&c, r#"userName sw "bob" or userName sw "carol""#),
        ["bob@example.com", "carol@sample.net"]
    );
    // `and` binds tighter than `or`; parentheses change that.
    assert_eq!(
        user_names(
            &c,
            r#"userName sw "alice" or userName sw "bob" and active eq true"#
        ),
        ["alice@example.com"]
    );
    assert_eq!(
        user_names(
            &c,
            r#"(userName sw "alice" or userName sw "bob") and active eq false"#
        ),
        ["bob@example.com"]
    );
    assert_eq!(
        user_names(&c, r#"not (title eq "Engineer")"#),
        ["bob@example.com"]
    );
}

#[test]
fn filter_value_paths_and_sub_attributes() {
    let s = Server::start();
    let c = s.client();
    seed_users(&c);
    assert_eq!(
        user_names(&c, r#"emails[type eq "home" and value co "home.org"]"#),
        ["alice@example.com"]
    );
    // Both conditions must hold for the same element.
    assert!(user_names(&c, r#"emails[type eq "home" and value ew "example.com"]"#).is_empty());
    assert_eq!(
        user_names(&c, r#"emails.value ew ".org""#),
        ["alice@example.com", "bob@example.com"]
    );
    assert_eq!(
        user_names(&c, r#"emails.type eq "home""#),
        ["alice@example.com"]
    );
    assert_eq!(
        user_names(&c, r#"name.givenName eq "carol""#),
        ["carol@sample.net"]
    );
    assert_eq!(
        user_names(&c, r#"emails[type eq "work"].value eq "bob@example.org""#),
        ["bob@example.com"]
    );
}

#[test]
fn filter_urn_qualified_paths() {
    let s = Server::start();
    let c = s.client();
    seed_users(&c);
    assert_eq!(
        user_names(
            &c,
            r#"urn:ietf:params:scim:schemas:core:2.0:User:userName eq "bob@example.com""#
        ),
        ["bob@example.com"]
    );
    assert_eq!(
        user_names(&c, &format!(r#"{ENTERPRISE}:department eq "r&d""#)),
        ["alice@example.com"]
    );
    assert_eq!(
        user_names(&c, &format!(r#"{ENTERPRISE}:employeeNumber gt "150""#)),
        ["bob@example.com"]
    );
    assert_eq!(
        user_names(
            &c,
            r#"urn:ietf:params:scim:schemas:core:2.0:User:name.familyName sw "coo""#
        ),
        ["carol@sample.net"]
    );
}

#[test]
fn filter_attribute_names_and_operators_ignore_case() {
    let s = Server::start();
    let c = s.client();
    seed_users(&c);
    assert_eq!(
        user_names(&c, r#"USERNAME EQ "alice@example.com""#),
        ["alice@example.com"]
    );
    assert_eq!(
        user_names(&c, r#"Name.FamilyName Sw "b" OR Title Eq "nobody""#),
        ["bob@example.com"]
    );
    assert_eq!(
        user_names(&c, r#"EMAILS[TYPE eq "home"]"#),
        ["alice@example.com"]
    );
}

#[test]
fn user_name_compares_ignoring_case_but_external_id_exactly() {
    let s = Server::start();
    let c = s.client();
    seed_users(&c);
    assert_eq!(
        user_names(&c, r#"userName eq "ALICE@Example.COM""#),
        ["alice@example.com"]
    );
    assert_eq!(
        user_names(&c, r#"externalId eq "Ext-A""#),
        ["alice@example.com"]
    );
    assert!(user_names(&c, r#"externalId eq "ext-a""#).is_empty());
    assert!(user_names(&c, r#"externalId eq "EXT-B""#).is_empty());
    assert!(user_names(&c, r#"externalId sw "ext""#) == ["bob@example.com"]);
}

#[test]
fn filter_compares_last_modified_as_an_instant() {
    use time::format_description::well_known::Rfc3339;
    let s = Server::start();
    let c = s.client();
    let first = create(&c, "/Users", json!({"userName": "first@example.com"}));
    create(&c, "/Users", json!({"userName": "second@example.com"}));
    let stamp = first["meta"]["lastModified"].as_str().unwrap().to_owned();
    assert_eq!(
        user_names(&c, r#"meta.lastModified gt "2000-01-01T00:00:00Z""#).len(),
        2
    );
    assert!(user_names(&c, r#"meta.lastModified gt "2999-01-01T00:00:00Z""#).is_empty());
    assert!(user_names(&c, &format!(r#"meta.lastModified lt "{stamp}""#)).is_empty());
    assert!(
        user_names(&c, &format!(r#"meta.lastModified ge "{stamp}""#))
            .contains(&"first@example.com".to_owned())
    );
    // The same instant written with another offset is equal.
    let shifted = time::OffsetDateTime::parse(&stamp, &Rfc3339)
        .unwrap()
        .to_offset(time::UtcOffset::from_hms(2, 0, 0).unwrap())
        .format(&Rfc3339)
        .unwrap();
    assert_ne!(shifted, stamp);
    assert!(
        user_names(&c, &format!(r#"meta.lastModified eq "{shifted}""#))
            .contains(&"first@example.com".to_owned())
    );
    assert!(
        user_names(&c, &format!(r#"meta.lastModified le "{shifted}""#))
            .contains(&"first@example.com".to_owned())
    );
}

#[test]
fn filter_compares_booleans() {
    let s = Server::start();
    let c = s.client();
    seed_users(&c);
    assert_eq!(user_names(&c, "active eq false"), ["bob@example.com"]);
    assert_eq!(
        user_names(&c, "active eq TRUE"),
        ["alice@example.com", "carol@sample.net"]
    );
    assert_eq!(user_names(&c, "active ne true"), ["bob@example.com"]);
    assert_eq!(
        user_names(&c, "emails[primary eq true]"),
        ["alice@example.com"]
    );
}

#[test]
fn invalid_filters_are_400_invalid_filter() {
    let s = Server::start();
    let c = s.client();
    for f in [
        r#"userName eq"#,
        r#"userName equals "x""#,
        r#"userName eq "unterminated"#,
        r#"(userName eq "x""#,
        r#"userName eq "x" and"#,
        r#"nosuchattribute eq "x""#,
        r#"active gt true"#,
        r#"meta.lastModified gt "yesterday""#,
        r#"emails[type eq "work""#,
        r#"emails[type eq "work"].value.more eq "x""#,
        r#"userName eq 'single'"#,
    ] {
        let r = c.get(&with_query("/Users", &[("filter", f)]));
        assert_scim_error(&r, 400, Some("invalidFilter"));
        let r = c.post(
            "/Users/.search",
            &json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:SearchRequest"], "filter": f}),
        );
        assert_scim_error(&r, 400, Some("invalidFilter"));
    }
}

#[test]
fn too_long_or_too_deep_filters_are_refused_not_a_crash() {
    let s = Server::start();
    let c = s.client();
    seed_users(&c);
    let long = format!(r#"userName eq "{}""#, "a".repeat(4100));
    assert!(long.len() > 4096);
    assert_scim_error(
        &c.get(&with_query("/Users", &[("filter", &long)])),
        400,
        Some("invalidFilter"),
    );
    let deep = format!(r#"{}userName eq "x"{}"#, "(".repeat(40), ")".repeat(40));
    assert_scim_error(
        &c.get(&with_query("/Users", &[("filter", &deep)])),
        400,
        Some("invalidFilter"),
    );
    let nots = format!(r#"{}userName eq "x""#, "not ".repeat(40));
    assert_scim_error(
        &c.post("/.search", &json!({"filter": nots})),
        400,
        Some("invalidFilter"),
    );
    // Within the limits a long chain and a deep nesting are fine.
    let chain = vec![r#"userName eq "alice@example.com""#; 100].join(" or ");
    assert!(chain.len() < 4096);
    assert_eq!(user_names(&c, &chain), ["alice@example.com"]);
    let nested = format!(
        r#"{}userName eq "bob@example.com"{}"#,
        "(".repeat(30),
        ")".repeat(30)
    );
    assert_eq!(user_names(&c, &nested), ["bob@example.com"]);
    assert_eq!(c.get("/ServiceProviderConfig").status, 200, "still serving");
}

// ---------------------------------------------------------------------------------
// Sorting and paging

#[test]
fn sort_by_and_sort_order() {
    let s = Server::start();
    let c = s.client();
    seed_users(&c);
    let names = |params: &[(&str, &str)]| -> Vec<String> {
        list(&c, "/Users", params)["Resources"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["name"]["givenName"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(names(&[("sortBy", "userName")]), ["Alice", "Bob", "Carol"]);
    assert_eq!(
        names(&[("sortBy", "name.familyName"), ("sortOrder", "descending")]),
        ["Carol", "Bob", "Alice"]
    );
    assert_eq!(
        names(&[("sortBy", "emails.value"), ("sortOrder", "Ascending")]),
        ["Alice", "Bob", "Carol"],
        "by the primary (or first) email; a user without one sorts last"
    );
    // RFC 7644 §3.4.2.3: without a value, "ordered last if ascending and first if
    // descending": the descending page is the ascending one reversed.
    assert_eq!(
        names(&[("sortBy", "emails.value"), ("sortOrder", "descending")]),
        ["Carol", "Bob", "Alice"],
        "a user without an email sorts first when descending"
    );
    assert_eq!(
        names(&[
            ("sortBy", "userName"),
            ("sortOrder", "descending"),
            ("startIndex", "2"),
            ("count", "1")
        ]),
        ["Bob"]
    );
    assert_scim_error(
        &c.get("/Users?sortBy=userName&sortOrder=sideways"),
        400,
        Some("invalidValue"),
    );
    // Names are caseless and may carry their schema URN (RFC 7644 §3.10).
    for by in [
        "USERNAME",
        "urn:ietf:params:scim:schemas:core:2.0:User:userName",
    ] {
        assert_eq!(names(&[("sortBy", by)]), ["Alice", "Bob", "Carol"], "{by}");
    }
    // An attribute the schemas do not define is refused, naming it, rather than
    // answered with an unsorted page the client takes for a sorted one; so is a
    // complex attribute without a sub-attribute to sort by. GET and POST .search.
    for (by, says) in [
        (
            "favouriteColour",
            "sortBy \"favouriteColour\": no such attribute in the User schemas",
        ),
        ("name", "sortBy \"name\": \"name\" is complex"),
        ("name.middle", "\"name\" has no sub-attribute \"middle\""),
    ] {
        let r = c.get(&with_query("/Users", &[("sortBy", by)]));
        assert_scim_error(&r, 400, Some("invalidValue"));
        let detail = r.json()["detail"].as_str().unwrap().to_owned();
        assert!(detail.contains(says), "{by}: {detail}");
        let r = c.post("/Users/.search", &json!({"sortBy": by}));
        assert_scim_error(&r, 400, Some("invalidValue"));
    }
    let r = c.post("/.search", &json!({"sortBy": "nope"}));
    assert_scim_error(&r, 400, Some("invalidValue"));
    assert!(text(&r).contains("User or Group"), "{}", text(&r));
    // Unlike sortBy, an unknown name in attributes/excludedAttributes selects
    // nothing and is ignored (README: identity providers ask for extension
    // attributes a directory may not declare).
    let page = list(
        &c,
        "/Users",
        &[
            ("sortBy", "userName"),
            (
                "attributes",
                "name.givenName,urn:example:ext:2.0:User:badge,favouriteColour",
            ),
        ],
    );
    let first = &page["Resources"][0];
    assert_eq!(first["name"]["givenName"], "Alice", "{page}");
    assert!(
        first.get("favouriteColour").is_none() && first.get("emails").is_none(),
        "{page}"
    );
    let page = list(
        &c,
        "/Users",
        &[
            ("sortBy", "userName"),
            ("excludedAttributes", "favouriteColour,emails"),
        ],
    );
    assert_eq!(page["Resources"][0]["name"]["givenName"], "Alice", "{page}");
    assert!(page["Resources"][0].get("emails").is_none(), "{page}");
}

#[test]
fn start_index_and_count_page_with_correct_totals() {
    let s = Server::start();
    let c = s.client();
    for i in 0..5 {
        create(
            &c,
            "/Users",
            json!({"userName": format!("p{i}@example.com")}),
        );
    }
    let page = |params: &[(&str, &str)]| {
        let j = list(&c, "/Users", params);
        (
            j["totalResults"].as_u64().unwrap(),
            j["itemsPerPage"].as_u64().unwrap(),
            j["startIndex"].as_u64().unwrap(),
            j["Resources"].as_array().unwrap().len() as u64,
        )
    };
    assert_eq!(page(&[("startIndex", "4"), ("count", "10")]), (5, 2, 4, 2));
    assert_eq!(page(&[("startIndex", "6")]), (5, 0, 6, 0));
    assert_eq!(page(&[("count", "0")]), (5, 0, 1, 0));
    assert_eq!(
        page(&[("startIndex", "0"), ("count", "1")]),
        (5, 1, 1, 1),
        "startIndex < 1 is 1"
    );
    assert_eq!(
        page(&[("count", "-3")]),
        (5, 0, 1, 0),
        "a negative count is 0"
    );
    // With a filter, totals count the matches, not the table.
    let sorted = [("sortBy", "userName"), ("filter", r#"userName sw "p""#)];
    let j = list(
        &c,
        "/Users",
        &[sorted[0], sorted[1], ("startIndex", "2"), ("count", "2")],
    );
    assert_eq!(
        (j["totalResults"].as_u64(), j["itemsPerPage"].as_u64()),
        (Some(5), Some(2))
    );
    assert_eq!(j["Resources"][0]["userName"], "p1@example.com");
    let j = list(
        &c,
        "/Users",
        &[("filter", r#"userName ew "3@example.com""#), ("count", "0")],
    );
    assert_eq!(j["totalResults"], 1);
    assert_scim_error(&c.get("/Users?count=many"), 400, Some("invalidValue"));
    assert_scim_error(&c.get("/Users?startIndex=first"), 400, Some("invalidValue"));
}

#[test]
fn default_and_max_page_size_are_what_service_provider_config_announces() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("scimbridge.toml");
    std::fs::write(
        &config,
        "[limits]\ndefault_page_size = 3\nmax_page_size = 4\n",
    )
    .unwrap();
    let data = tempfile::tempdir().unwrap();
    let s = Server::start_in_with(data, "test", &["--config", config.to_str().unwrap()]);
    let c = s.client();
    let spc = c.get("/ServiceProviderConfig").json();
    assert_eq!(spc["filter"]["maxResults"], 4);
    assert_eq!(spc["pagination"]["defaultPageSize"], 3);
    assert_eq!(spc["pagination"]["maxPageSize"], 4);
    for i in 0..6 {
        create(
            &c,
            "/Users",
            json!({"userName": format!("s{i}@example.com")}),
        );
    }
    let j = list(&c, "/Users", &[]);
    assert_eq!(
        (j["totalResults"].as_u64(), j["itemsPerPage"].as_u64()),
        (Some(6), Some(3))
    );
    let j = list(&c, "/Users", &[("count", "100")]);
    assert_eq!(j["itemsPerPage"], 4, "count is capped at maxResults");
    let j = list(
        &c,
        "/Users",
        &[("filter", r#"userName sw "s""#), ("count", "100")],
    );
    assert_eq!(
        (j["totalResults"].as_u64(), j["itemsPerPage"].as_u64()),
        (Some(6), Some(4))
    );
    let j = c.post("/.search", &json!({"count": 100})).json();
    assert_eq!(j["itemsPerPage"], 4);
}

// ---------------------------------------------------------------------------------
// attributes / excludedAttributes

fn keys(v: &Value) -> Vec<String> {
    let mut k: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
    k.sort();
    k
}

#[test]
fn attributes_on_get_by_id_and_list_keep_id_and_schemas() {
    let s = Server::start();
    let c = s.client();
    let ids = seed_users(&c);
    let one = c
        .get(&format!("/Users/{}?attributes=userName", ids[0]))
        .json();
    assert_eq!(keys(&one), ["id", "schemas", "userName"]);
    let one = c
        .get(&format!(
            "/Users/{}?attributes=name.givenName,emails.type",
            ids[0]
        ))
        .json();
    assert_eq!(one["name"], json!({"givenName": "Alice"}));
    assert_eq!(one["emails"], json!([{"type": "work"}, {"type": "home"}]));
    let one = c
        .get(&format!(
            "/Users/{}?excludedAttributes=emails,name.familyName,id",
            ids[0]
        ))
        .json();
    assert!(one.get("emails").is_none());
    assert_eq!(one["name"], json!({"givenName": "Alice"}));
    assert_eq!(one["id"], ids[0], "id is always returned");
    assert!(one.get("meta").is_some() && one.get("userName").is_some());
    let page = list(
        &c,
        "/Users",
        &[("attributes", &format!("{ENTERPRISE}:department"))],
    );
    for r in page["Resources"].as_array().unwrap() {
        let k = keys(r);
        assert!(
            k.iter()
                .all(|k| ["id", "schemas", ENTERPRISE].contains(&k.as_str())),
            "{k:?}"
        );
    }
    assert_eq!(
        page["Resources"][0][ENTERPRISE],
        json!({"department": "R&D"})
    );
}

#[test]
fn attributes_on_search_and_on_write_responses() {
    let s = Server::start();
    let c = s.client();
    let r = c.post(
        "/Users?attributes=userName",
        &json!({"userName": "w@example.com", "title": "T", "name": {"givenName": "W"}}),
    );
    assert_eq!(r.status, 201);
    assert_eq!(keys(&r.json()), ["id", "schemas", "userName"]);
    let id = r.json()["id"].as_str().unwrap().to_owned();
    let r = c.put(
        &format!("/Users/{id}?excludedAttributes=name,meta"),
        &json!({"userName": "w@example.com", "title": "T2", "name": {"givenName": "W"}}),
    );
    assert_eq!(r.status, 200);
    assert_eq!(keys(&r.json()), ["id", "schemas", "title", "userName"]);
    let r = c.patch(
        &format!("/Users/{id}?attributes=title"),
        &patch_body(json!([{"op": "replace", "path": "title", "value": "T3"}])),
    );
    assert_eq!(r.status, 200);
    assert_eq!(
        r.json(),
        json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"], "id": id, "title": "T3"})
    );
    let g = c.post(
        "/Groups?excludedAttributes=members",
        &json!({"displayName": "G", "members": [{"value": id}]}),
    );
    assert_eq!(g.status, 201);
    assert!(g.json().get("members").is_none());
    let found = c
        .post(
            "/Users/.search",
            &json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:SearchRequest"],
                    "attributes": ["title", "groups"], "filter": "title eq \"T3\""}),
        )
        .json();
    assert_eq!(found["totalResults"], 1);
    assert_eq!(
        keys(&found["Resources"][0]),
        ["groups", "id", "schemas", "title"]
    );
    let found = c
        .post(
            "/.search",
            &json!({"excludedAttributes": "meta,groups,members", "filter": "id pr"}),
        )
        .json();
    assert_eq!(found["totalResults"], 2);
    for r in found["Resources"].as_array().unwrap() {
        assert!(r.get("meta").is_none() && r.get("members").is_none() && r.get("groups").is_none());
    }
}

#[test]
fn password_is_never_returned_even_when_asked_for() {
    let s = Server::start();
    let c = s.client();
    let u = create(
        &c,
        "/Users",
        json!({"userName": "pw@example.com", "password": "hunter22"}),
    );
    assert!(u.get("password").is_none());
    let id = u["id"].as_str().unwrap();
    for path in [
        format!("/Users/{id}?attributes=password"),
        format!("/Users/{id}?attributes=password,userName"),
        with_query(
            "/Users",
            &[("attributes", "password"), ("filter", "password pr")],
        ),
    ] {
        let r = c.get(&path);
        assert!(
            !text(&r).contains("hunter22") && !text(&r).contains("\"password\""),
            "{path}: {}",
            text(&r)
        );
    }
    let r = c.patch(
        &format!("/Users/{id}?attributes=password"),
        &patch_body(json!([{"op": "replace", "path": "password", "value": "hunter23"}])),
    );
    assert_eq!(r.status, 200, "{}", text(&r));
    assert!(!text(&r).contains("hunter23"));
}

// ---------------------------------------------------------------------------------
// .search

#[test]
fn search_on_root_users_and_groups() {
    let s = Server::start();
    let c = s.client();
    let u = create(
        &c,
        "/Users",
        json!({"userName": "s@example.com", "externalId": "shared"}),
    );
    let g = create(
        &c,
        "/Groups",
        json!({"displayName": "S", "externalId": "shared"}),
    );
    create(
        &c,
        "/Groups",
        json!({"displayName": "Other", "externalId": "other"}),
    );
    let body = json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:SearchRequest"],
                      "filter": "externalId eq \"shared\"", "startIndex": 1, "count": 10});
    let all = c.post("/.search", &body).json();
    assert_eq!(all["totalResults"], 2);
    let mut types: Vec<&str> = all["Resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["meta"]["resourceType"].as_str().unwrap())
        .collect();
    types.sort();
    assert_eq!(types, ["Group", "User"]);
    let users = c.post("/Users/.search", &body).json();
    assert_eq!(
        (users["totalResults"].as_u64(), &users["Resources"][0]["id"]),
        (Some(1), &u["id"])
    );
    let groups = c.post("/Groups/.search", &body).json();
    assert_eq!(
        (
            groups["totalResults"].as_u64(),
            &groups["Resources"][0]["id"]
        ),
        (Some(1), &g["id"])
    );
    let sorted = c
        .post(
            "/Groups/.search",
            &json!({"sortBy": "displayName", "sortOrder": "descending", "count": 1}),
        )
        .json();
    assert_eq!(
        (
            sorted["totalResults"].as_u64(),
            &sorted["Resources"][0]["displayName"]
        ),
        (Some(2), &json!("S"))
    );
    assert_scim_error(
        &c.post("/.search", &json!({"filter": "userName eq"})),
        400,
        Some("invalidFilter"),
    );
    assert_scim_error(
        &c.post("/.search", &json!(["not", "an", "object"])),
        400,
        None,
    );
    assert_eq!(c.get("/.search").status, 405);
}

// ---------------------------------------------------------------------------------
// PATCH

fn user_with_emails(c: &Client) -> String {
    create(
        c,
        "/Users",
        json!({"userName": "patch@example.com", "name": {"givenName": "P", "familyName": "Q"},
               "emails": [{"value": "w@example.com", "type": "work", "primary": true},
                          {"value": "h@example.com", "type": "home"}]}),
    )["id"]
        .as_str()
        .unwrap()
        .to_owned()
}

fn patch_ok(c: &Client, path: &str, ops: Value) -> Value {
    let r = c.patch(path, &patch_body(ops));
    assert_eq!(r.status, 200, "{}", text(&r));
    r.json()
}

#[test]
fn patch_add_replace_remove_with_a_path() {
    let s = Server::start();
    let c = s.client();
    let p = format!("/Users/{}", user_with_emails(&c));
    let j = patch_ok(
        &c,
        &p,
        json!([{"op": "add", "path": "title", "value": "Dr"}]),
    );
    assert_eq!(j["title"], "Dr");
    let j = patch_ok(
        &c,
        &p,
        json!([{"op": "replace", "path": "name.givenName", "value": "R"}]),
    );
    assert_eq!(j["name"], json!({"givenName": "R", "familyName": "Q"}));
    let j = patch_ok(
        &c,
        &p,
        json!([{"op": "remove", "path": "title"}, {"op": "remove", "path": "name.familyName"}]),
    );
    assert!(j.get("title").is_none());
    assert_eq!(j["name"], json!({"givenName": "R"}));
    assert_eq!(
        c.get(&p).json()["name"],
        json!({"givenName": "R"}),
        "stored"
    );
}

#[test]
fn patch_without_a_path_merges_the_value_object() {
    let s = Server::start();
    let c = s.client();
    let p = format!("/Users/{}", user_with_emails(&c));
    let j = patch_ok(
        &c,
        &p,
        json!([{"op": "add", "value": {"nickName": "Pat", "name": {"middleName": "M"},
                                        "emails": [{"value": "o@example.com", "type": "other"}]}}]),
    );
    assert_eq!(j["nickName"], "Pat");
    assert_eq!(
        j["name"],
        json!({"givenName": "P", "familyName": "Q", "middleName": "M"})
    );
    assert_eq!(
        j["emails"].as_array().unwrap().len(),
        3,
        "add appends to multi-valued"
    );
    let j = patch_ok(
        &c,
        &p,
        json!([{"op": "replace", "value": {"emails": [{"value": "only@example.com", "type": "work"}]}}]),
    );
    assert_eq!(
        j["emails"],
        json!([{"value": "only@example.com", "type": "work"}]),
        "replace replaces"
    );
    assert_eq!(j["nickName"], "Pat");
}

#[test]
fn patch_through_value_path_filters() {
    let s = Server::start();
    let c = s.client();
    let p = format!("/Users/{}", user_with_emails(&c));
    let j = patch_ok(
        &c,
        &p,
        json!([{"op": "replace", "path": "emails[type eq \"home\"].value", "value": "h2@example.com"}]),
    );
    assert_eq!(
        j["emails"][1],
        json!({"value": "h2@example.com", "type": "home"})
    );
    assert_eq!(j["emails"][0]["value"], "w@example.com");
    let j = patch_ok(
        &c,
        &p,
        json!([{"op": "remove", "path": "emails[value ew \"h2@example.com\"]"}]),
    );
    assert_eq!(
        j["emails"],
        json!([{"value": "w@example.com", "type": "work", "primary": true}])
    );
    // RFC 7644 §3.5.2.3: the matched element is replaced by the value, whole.
    let j = patch_ok(
        &c,
        &p,
        json!([{"op": "replace", "path": "emails[type eq \"work\"]", "value": {"value": "w2@example.com", "display": "Work"}}]),
    );
    assert_eq!(
        j["emails"][0],
        json!({"value": "w2@example.com", "display": "Work"}),
        "replace of an element replaces it"
    );
}

#[test]
fn patch_add_to_multi_valued_merges_without_duplicates() {
    let s = Server::start();
    let c = s.client();
    let p = format!("/Users/{}", user_with_emails(&c));
    let j = patch_ok(
        &c,
        &p,
        json!([{"op": "add", "path": "emails", "value": [
            {"value": "h@example.com", "type": "home"},
            {"value": "new@example.com", "type": "other"}]}]),
    );
    let values: Vec<&str> = j["emails"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["value"].as_str().unwrap())
        .collect();
    assert_eq!(
        values,
        ["w@example.com", "h@example.com", "new@example.com"]
    );
    let g = create(&c, "/Groups", json!({"displayName": "G"}));
    let gp = format!("/Groups/{}", g["id"].as_str().unwrap());
    let uid = p.trim_start_matches("/Users/");
    for _ in 0..2 {
        let r = c.patch(
            &gp,
            &patch_body(json!([{"op": "add", "path": "members", "value": [{"value": uid}]}])),
        );
        // A group PATCH answers 204 (issue 10); the group is read back.
        assert_eq!(r.status, 204, "{}", text(&r));
        let j = c.get(&gp).json();
        assert_eq!(j["members"].as_array().unwrap().len(), 1);
    }
}

#[test]
fn patch_keeps_primary_unique() {
    let s = Server::start();
    let c = s.client();
    let p = format!("/Users/{}", user_with_emails(&c));
    let j = patch_ok(
        &c,
        &p,
        json!([{"op": "add", "path": "emails", "value": [{"value": "p@example.com", "type": "other", "primary": true}]}]),
    );
    let primaries: Vec<&str> = j["emails"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["primary"] == true)
        .map(|e| e["value"].as_str().unwrap())
        .collect();
    assert_eq!(primaries, ["p@example.com"]);
    let j = patch_ok(
        &c,
        &p,
        json!([{"op": "replace", "path": "emails[type eq \"home\"].primary", "value": true}]),
    );
    let primaries: Vec<&str> = j["emails"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["primary"] == true)
        .map(|e| e["value"].as_str().unwrap())
        .collect();
    assert_eq!(primaries, ["h@example.com"]);
}

#[test]
fn patch_extension_attributes_by_urn_path() {
    let s = Server::start();
    let c = s.client();
    let p = format!("/Users/{}", user_with_emails(&c));
    let m1 = create(&c, "/Users", json!({"userName": "m-1@example.com"}))["id"].clone();
    let j = patch_ok(
        &c,
        &p,
        json!([{"op": "add", "path": format!("{ENTERPRISE}:department"), "value": "Ops"},
               {"op": "add", "path": format!("{ENTERPRISE}:manager.value"), "value": m1}]),
    );
    assert_eq!(
        j[ENTERPRISE],
        json!({"department": "Ops", "manager": {"value": m1}})
    );
    assert!(j["schemas"]
        .as_array()
        .unwrap()
        .contains(&json!(ENTERPRISE)));
    let j = patch_ok(
        &c,
        &p,
        json!([{"op": "replace", "path": ENTERPRISE, "value": {"costCenter": "42"}}]),
    );
    assert_eq!(j[ENTERPRISE]["costCenter"], "42");
    let j = patch_ok(&c, &p, json!([{"op": "remove", "path": ENTERPRISE}]));
    assert!(j.get(ENTERPRISE).is_none());
    assert!(!j["schemas"]
        .as_array()
        .unwrap()
        .contains(&json!(ENTERPRISE)));
}

/// Asserts a refused PATCH left the resource as it was (same version).
fn assert_patch_refused(c: &Client, p: &str, ops: Value, scim_type: &str) {
    let before = c.get(p).json();
    let r = c.patch(p, &patch_body(ops.clone()));
    assert_scim_error(&r, 400, Some(scim_type));
    assert_eq!(c.get(p).json(), before, "{ops} changed the resource");
}

#[test]
fn patch_of_read_only_attributes_is_a_mutability_error() {
    let s = Server::start();
    let c = s.client();
    let p = format!("/Users/{}", user_with_emails(&c));
    assert_patch_refused(
        &c,
        &p,
        json!([{"op": "replace", "path": "id", "value": "other"}]),
        "mutability",
    );
    assert_patch_refused(
        &c,
        &p,
        json!([{"op": "replace", "path": "meta.created", "value": "2000-01-01T00:00:00Z"}]),
        "mutability",
    );
    assert_patch_refused(
        &c,
        &p,
        json!([{"op": "add", "path": "groups", "value": [{"value": "g"}]}]),
        "mutability",
    );
    // A read-only change after a valid one: nothing is applied.
    assert_patch_refused(
        &c,
        &p,
        json!([{"op": "replace", "path": "title", "value": "X"}, {"op": "remove", "path": "meta"}]),
        "mutability",
    );
}

#[test]
fn patch_with_no_target_is_refused() {
    let s = Server::start();
    let c = s.client();
    let p = format!("/Users/{}", user_with_emails(&c));
    assert_patch_refused(&c, &p, json!([{"op": "remove"}]), "noTarget");
    assert_patch_refused(
        &c,
        &p,
        json!([{"op": "remove", "path": "emails[type eq \"pager\"]"}]),
        "noTarget",
    );
    assert_patch_refused(
        &c,
        &p,
        json!([{"op": "replace", "path": "emails[value co \"nowhere\"].type", "value": "x"}]),
        "noTarget",
    );
}

#[test]
fn patch_with_an_invalid_path_is_refused() {
    let s = Server::start();
    let c = s.client();
    let p = format!("/Users/{}", user_with_emails(&c));
    // Malformed paths are invalidPath; well-formed paths naming an attribute no
    // schema defines are invalidSyntax (the interop profile's rule for unknown
    // attributes, as in a body).
    for path in [
        "emails[type eq \"work\"",
        "emails[type eq \"work\"].value.x",
    ] {
        assert_patch_refused(
            &c,
            &p,
            json!([{"op": "replace", "path": path, "value": "x"}]),
            "invalidPath",
        );
    }
    for path in ["nosuchattribute", "name.nosuchsub", "urn:nope:Thing:attr"] {
        assert_patch_refused(
            &c,
            &p,
            json!([{"op": "replace", "path": path, "value": "x"}]),
            "invalidSyntax",
        );
    }
}

#[test]
fn patch_with_an_invalid_value_is_refused() {
    let s = Server::start();
    let c = s.client();
    let p = format!("/Users/{}", user_with_emails(&c));
    assert_patch_refused(
        &c,
        &p,
        json!([{"op": "replace", "path": "active", "value": "sometimes"}]),
        "invalidValue",
    );
    assert_patch_refused(
        &c,
        &p,
        json!([{"op": "replace", "path": "name", "value": "a string"}]),
        "invalidValue",
    );
    assert_patch_refused(
        &c,
        &p,
        json!([{"op": "replace", "path": "userName", "value": true}]),
        "invalidValue",
    );
    assert_patch_refused(
        &c,
        &p,
        json!([{"op": "remove", "path": "userName"}]),
        "mutability",
    );
    let r = c.patch(
        &p,
        &json!({"schemas": [PATCH_OP], "Operations": [{"op": "rename", "path": "title"}]}),
    );
    assert_scim_error(&r, 400, None);
}

// ---------------------------------------------------------------------------------
// PUT

#[test]
fn put_ignores_read_only_attributes_in_the_body() {
    let s = Server::start();
    let c = s.client();
    let u = create(&c, "/Users", json!({"userName": "ro@example.com"}));
    let id = u["id"].as_str().unwrap();
    let g = create(
        &c,
        "/Groups",
        json!({"displayName": "G", "members": [{"value": id}]}),
    );
    let r = c.put(
        &format!("/Users/{id}"),
        &json!({"userName": "ro@example.com", "title": "New",
                "meta": {"created": "2000-01-01T00:00:00Z", "version": "W/\"999\"", "resourceType": "Group"},
                "groups": []}),
    );
    assert_eq!(r.status, 200, "{}", text(&r));
    let j = r.json();
    assert_eq!(j["meta"]["created"], u["meta"]["created"]);
    assert_eq!(j["meta"]["resourceType"], "User");
    assert_ne!(j["meta"]["version"], "W/\"999\"");
    assert_eq!(j["title"], "New");
    assert_eq!(
        j["groups"][0]["value"], g["id"],
        "memberships are not changed through the user"
    );
}

#[test]
fn put_cannot_change_the_id() {
    let s = Server::start();
    let c = s.client();
    let u = create(&c, "/Users", json!({"userName": "id@example.com"}));
    let id = u["id"].as_str().unwrap();
    let other = "00000000-0000-7000-8000-000000000001";
    let r = c.put(
        &format!("/Users/{id}"),
        &json!({"id": other, "userName": "id@example.com", "title": "T"}),
    );
    assert_eq!(r.status, 200, "{}", text(&r));
    assert_eq!(r.json()["id"], id);
    assert_eq!(c.get(&format!("/Users/{id}")).json()["title"], "T");
    assert_eq!(c.get(&format!("/Users/{other}")).status, 404);
    let g = create(&c, "/Groups", json!({"displayName": "G"}));
    let gid = g["id"].as_str().unwrap();
    let r = c.put(
        &format!("/Groups/{gid}"),
        &json!({"id": id, "displayName": "G2"}),
    );
    assert_eq!((r.status, &r.json()["id"]), (200, &json!(gid)));
    assert_eq!(
        c.get(&format!("/Users/{id}")).json()["userName"],
        "id@example.com"
    );
}

// ---------------------------------------------------------------------------------
// ETags

#[test]
fn if_match_mismatch_is_412_and_changes_nothing() {
    let s = Server::start();
    let c = s.client();
    let u = create(
        &c,
        "/Users",
        json!({"userName": "etag@example.com", "title": "A"}),
    );
    let p = format!("/Users/{}", u["id"].as_str().unwrap());
    let stale = [("if-match", "W/\"999\"")];
    let before = c.get(&p).json();
    let r = c.scim_with(
        "PUT",
        &p,
        Some(&json!({"userName": "etag@example.com", "title": "B"})),
        &stale,
    );
    assert_scim_error(&r, 412, None);
    let r = c.scim_with(
        "PATCH",
        &p,
        Some(&patch_body(
            json!([{"op": "replace", "path": "title", "value": "B"}]),
        )),
        &stale,
    );
    assert_scim_error(&r, 412, None);
    assert_scim_error(&c.scim_with("DELETE", &p, None, &stale), 412, None);
    assert_eq!(c.get(&p).json(), before);
}

#[test]
fn if_match_with_the_current_etag_succeeds_with_a_new_etag() {
    let s = Server::start();
    let c = s.client();
    let r = c.post("/Users", &json!({"userName": "etag@example.com"}));
    let p = format!("/Users/{}", r.json()["id"].as_str().unwrap());
    let v1 = r.header("etag").expect("ETag on create");
    assert_eq!(r.json()["meta"]["version"], v1.as_str());
    let r = c.scim_with(
        "PATCH",
        &p,
        Some(&patch_body(
            json!([{"op": "replace", "path": "title", "value": "B"}]),
        )),
        &[("if-match", &v1)],
    );
    assert_eq!(r.status, 200, "{}", text(&r));
    let v2 = r.header("etag").unwrap();
    assert_ne!(v2, v1);
    assert_eq!(r.json()["meta"]["version"], v2.as_str());
    let r = c.scim_with(
        "PUT",
        &p,
        Some(&json!({"userName": "etag@example.com"})),
        &[("if-match", &v2)],
    );
    assert_eq!(r.status, 200);
    let v3 = r.header("etag").unwrap();
    assert_ne!(v3, v2);
    assert_eq!(c.get(&p).header("etag").as_deref(), Some(v3.as_str()));
    assert_eq!(
        c.scim_with("DELETE", &p, None, &[("if-match", &v3)]).status,
        204
    );
}

#[test]
fn if_none_match_with_the_current_etag_is_304() {
    let s = Server::start();
    let c = s.client();
    let r = c.post("/Users", &json!({"userName": "inm@example.com"}));
    let p = format!("/Users/{}", r.json()["id"].as_str().unwrap());
    let old = r.header("etag").unwrap();
    let r = c.patch(
        &p,
        &patch_body(json!([{"op": "replace", "path": "title", "value": "B"}])),
    );
    let current = r.header("etag").unwrap();
    let r = c.scim_with("GET", &p, None, &[("if-none-match", &current)]);
    assert_eq!(r.status, 304);
    assert!(r.body.is_empty());
    assert_eq!(r.header("etag").as_deref(), Some(current.as_str()));
    let r = c.scim_with("GET", &p, None, &[("if-none-match", &old)]);
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["title"], "B");
}

/// A GET by id, its body and ETag (asserting 200).
fn read(c: &Client, p: &str) -> (Value, String) {
    let r = c.get(p);
    assert_eq!(r.status, 200, "{p}: {}", text(&r));
    (r.json(), r.header("etag").unwrap())
}

/// Repeated GETs are answered from rendered answers kept until the next commit
/// (issue 10): every acknowledged write — the user's own, a group's that changes its
/// `groups`, a rename of that group, a deletion — shows in the next GET, and
/// projections, `If-None-Match` and tokens behave as without the cache.
#[test]
fn repeated_gets_show_every_acknowledged_write() {
    let dir = tempfile::tempdir().unwrap();
    let read_only = crate::support::issue_token(dir.path(), "reader", &["--read-only"]);
    let s = Server::start_in(dir, "writer");
    let c = s.client();
    let ro = c.with_token(&read_only);
    let uid = create(&c, "/Users", json!({"userName": "cached@example.com"}))["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let gid = create(&c, "/Groups", json!({"displayName": "Before"}))["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (u, g) = (format!("/Users/{uid}"), format!("/Groups/{gid}"));
    let (first, v1) = read(&c, &u);
    assert!(first.get("groups").is_none());
    // The same answer twice, to either token.
    assert_eq!(read(&c, &u), (first.clone(), v1.clone()));
    assert_eq!(read(&ro, &u), (first.clone(), v1.clone()));
    // A membership change is a change of the user's `groups` and version.
    let add = patch_body(json!([{"op": "add", "path": "members", "value": [{"value": uid}]}]));
    assert_eq!(c.patch(&g, &add).status, 204);
    let (body, v2) = read(&c, &u);
    assert_ne!(v2, v1);
    assert_eq!(body["groups"][0]["value"], gid.as_str());
    assert_eq!(body["groups"][0]["display"], "Before");
    assert_eq!(read(&ro, &u), (body, v2.clone()));
    // The group's rename shows in the member's `groups`.
    let rename = patch_body(json!([{"op": "replace", "path": "displayName", "value": "After"}]));
    assert_eq!(c.patch(&g, &rename).status, 204);
    let (body, v3) = read(&ro, &u);
    assert_eq!(body["groups"][0]["display"], "After");
    assert_ne!(v3, v2);
    let (group, _) = read(&c, &g);
    assert_eq!(group["displayName"], "After");
    // The user's own change; a read-only token's refused write changes nothing.
    let title = patch_body(json!([{"op": "replace", "path": "title", "value": "T"}]));
    assert_eq!(c.patch(&u, &title).status, 200);
    let (body, v4) = read(&ro, &u);
    assert_eq!(body["title"], "T");
    assert_scim_error(&ro.patch(&u, &title), 403, None);
    assert_eq!(read(&c, &u), (body.clone(), v4.clone()));
    // An unknown token is refused whatever is kept.
    assert_scim_error(&c.with_token("not-a-token").get(&u), 401, None);
    // Projections of a kept answer.
    let only = list(&c, &u, &[("attributes", "userName")]);
    assert_eq!(keys(&only), ["id", "schemas", "userName"]);
    let without = list(&c, &u, &[("excludedAttributes", "groups")]);
    assert!(without.get("groups").is_none() && without["title"] == "T");
    // If-None-Match against a kept answer.
    let r = c.scim_with("GET", &u, None, &[("if-none-match", &v4)]);
    assert_eq!((r.status, r.header("etag")), (304, Some(v4.clone())));
    assert!(r.body.is_empty());
    let r = c.scim_with("GET", &u, None, &[("if-none-match", &v1)]);
    assert_eq!(r.status, 200);
    assert_eq!(r.json(), body);
    // Deletions: the group leaves the user's `groups`, the user is gone.
    assert_eq!(c.delete(&g).status, 204);
    assert!(read(&c, &u).0.get("groups").is_none());
    assert_scim_error(&c.get(&g), 404, None);
    assert_eq!(c.delete(&u).status, 204);
    assert_scim_error(&ro.get(&u), 404, None);
}

/// A counter or gauge of `/metrics` without labels.
fn metric(c: &Client, name: &str) -> u64 {
    let r = c.send("GET", "/metrics", &[], None);
    assert_eq!(r.status, 200);
    let body = text(&r);
    let line = body
        .lines()
        .find(|l| l.split_once(' ').is_some_and(|(n, _)| n == name))
        .unwrap_or_else(|| panic!("{name} not in /metrics"));
    line.split_once(' ').unwrap().1.parse().unwrap()
}

/// The server's bookkeeping — the tokens' last use and traffic counts, committed
/// every 30 s and before `token list` answers — is not a change of the directory
/// (issue 10): an answer kept before it is still served after it, and a write after
/// it shows in the next GET.
#[test]
fn bookkeeping_commits_keep_the_rendered_answers() {
    let s = Server::start();
    let c = s.client();
    let uid = create(&c, "/Users", json!({"userName": "kept@example.com"}))["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let u = format!("/Users/{uid}");
    let (first, v1) = read(&c, &u);
    let (hits, commits) = (
        metric(&c, "scimbridge_kept_answers_served_total"),
        metric(&c, "scimbridge_storage_commits_total"),
    );
    assert_eq!(read(&c, &u), (first.clone(), v1.clone()));
    assert_eq!(metric(&c, "scimbridge_kept_answers_served_total"), hits + 1);
    // `token list` writes the token's pending use and traffic first.
    let (ok, _, err) = crate::support::cli(&s.data_dir(), &["token", "list"]);
    assert!(ok, "{err}");
    assert!(metric(&c, "scimbridge_storage_commits_total") > commits);
    assert_eq!(read(&c, &u), (first, v1.clone()));
    assert_eq!(
        metric(&c, "scimbridge_kept_answers_served_total"),
        hits + 2,
        "the answer kept before the bookkeeping commit is served after it"
    );
    // A write of the directory after it: the next GET reads and renders it again.
    let title = patch_body(json!([{"op": "replace", "path": "title", "value": "After"}]));
    assert_eq!(c.patch(&u, &title).status, 200);
    let (body, v2) = read(&c, &u);
    assert_eq!(body["title"], "After");
    assert_ne!(v2, v1);
    assert_eq!(metric(&c, "scimbridge_kept_answers_served_total"), hits + 2);
    assert_eq!(read(&c, &u), (body, v2));
    assert_eq!(metric(&c, "scimbridge_kept_answers_served_total"), hits + 3);
}

// ---------------------------------------------------------------------------------
// Robustness

#[test]
fn malformed_requests_get_4xx_never_500() {
    let s = Server::start();
    let c = s.client();
    let u = create(&c, "/Users", json!({"userName": "robust@example.com"}));
    let id = u["id"].as_str().unwrap().to_owned();
    let g = create(&c, "/Groups", json!({"displayName": "R"}));
    let gid = g["id"].as_str().unwrap().to_owned();
    let auth = format!("Bearer {}", s.token);
    let raw = |method: &str, path: &str, body: &str| {
        c.send(
            method,
            &format!("/scim/v2{path}"),
            &[
                ("authorization", auth.as_str()),
                ("content-type", "application/scim+json"),
            ],
            Some(body.as_bytes().to_vec()),
        )
    };
    let user = format!("/Users/{id}");
    let group = format!("/Groups/{gid}");
    let bodies = [
        "", "null", "[]", "\"x\"", "42", "{", "{\"userName\": null}", "{\"userName\": [\"a\"]}",
        "{\"emails\": \"x\"}", "{\"emails\": [[1]]}", "{\"name\": {\"givenName\": {}}}",
        "{\"schemas\": \"x\"}", "{\"schemas\": [1]}",
        "{\"urn:ietf:params:scim:schemas:extension:enterprise:2.0:User\": 5}",
        "{\"members\": [{\"value\": 1}]}", "{\"members\": [{\"value\": \"no-such-id\"}]}",
        "{\"members\": [{\"value\": \"x\", \"type\": \"Robot\"}]}",
        "{\"Operations\": []}", "{\"schemas\": [\"urn:ietf:params:scim:api:messages:2.0:PatchOp\"]}",
        "{\"schemas\": [\"urn:ietf:params:scim:api:messages:2.0:PatchOp\"], \"Operations\": {}}",
        "{\"schemas\": [\"urn:ietf:params:scim:api:messages:2.0:PatchOp\"], \"Operations\": [1]}",
        "{\"schemas\": [\"urn:ietf:params:scim:api:messages:2.0:PatchOp\"], \"Operations\": [{\"op\": 1}]}",
        "{\"schemas\": [\"urn:ietf:params:scim:api:messages:2.0:PatchOp\"], \"Operations\": [{\"op\": \"add\", \"path\": 5, \"value\": 1}]}",
        "{\"schemas\": [\"urn:ietf:params:scim:api:messages:2.0:PatchOp\"], \"Operations\": [{\"op\": \"add\", \"path\": \"members[value eq \\\"x\\\"]\", \"value\": 1}]}",
        "{\"schemas\": [\"urn:ietf:params:scim:api:messages:2.0:PatchOp\"], \"Operations\": [{\"op\": \"add\", \"path\": \"\\u0000\", \"value\": 1}]}",
        "{\"filter\": 7}", "{\"count\": \"lots\"}", "{\"attributes\": {\"a\": 1}}",
        "{\"sortBy\": \"[\"}",
    ];
    // Every answer is below 500, and every 4xx is a SCIM error document carrying its
    // status (RFC 7644 §3.12). Returns whether the request was refused.
    let refused = |what: &str, r: &Resp| -> bool {
        assert!(r.status < 500, "{what}: {} {}", r.status, text(r));
        if r.status < 400 {
            return false;
        }
        assert_eq!(
            r.header("content-type").as_deref(),
            Some("application/scim+json"),
            "{what}: {}",
            text(r)
        );
        let j = r.json();
        assert_eq!(
            j["schemas"][0], "urn:ietf:params:scim:api:messages:2.0:Error",
            "{what}: {j}"
        );
        assert_eq!(j["status"], r.status.to_string(), "{what}: {j}");
        true
    };
    // A malformed write never changes anything: each one is refused.
    let mut accepted_writes = Vec::new();
    for body in bodies {
        for (method, path) in [
            ("POST", "/Users"),
            ("POST", "/Groups"),
            ("PUT", user.as_str()),
            ("PUT", group.as_str()),
            ("PATCH", user.as_str()),
            ("PATCH", group.as_str()),
            ("POST", "/Bulk"),
        ] {
            let what = format!("{method} {path} {body}");
            if !refused(&what, &raw(method, path, body)) {
                accepted_writes.push(what);
            }
        }
        // A search body with stray members may be answered (the members are not
        // search parameters), but never with a 500.
        for path in ["/.search", "/Users/.search"] {
            refused(&format!("POST {path} {body}"), &raw("POST", path, body));
        }
    }
    assert!(
        accepted_writes.is_empty(),
        "malformed writes were accepted: {accepted_writes:#?}"
    );
    let filters = [
        "",
        " ",
        "()",
        "[]",
        "\"\"",
        "userName",
        "userName eq",
        "eq \"x\"",
        "userName eq \"x\" or",
        "not",
        "not not",
        "userName[",
        "emails[",
        "emails[]",
        "emails[type eq \"work\"]]",
        "members[value eq \"x\"]",
        "meta.lastModified gt 5",
        "active eq \"maybe\"",
        "userName eq 1e999999",
        "userName eq -",
        "userName eq \"\\ud800\"",
        "userName eq \"\u{0}\"",
        "ü eq \"x\"",
        "userName eq \"ü\"",
        "urn: eq \"x\"",
        "urn:ietf:params:scim:schemas:core:2.0:User: eq \"x\"",
        "a.b.c.d eq \"x\"",
    ];
    for f in filters {
        for path in ["/Users", "/Groups"] {
            let r = c.get(&with_query(path, &[("filter", f)]));
            refused(&format!("{path} filter {f:?}"), &r);
        }
        let r = c.post("/.search", &json!({"filter": f}));
        refused(&format!("/.search filter {f:?}"), &r);
    }
    for path in [
        "/Users/",
        "/Users//x",
        "/Users/%00",
        "/Users/..%2F..%2Fetc",
        "/Users/a/b/c",
        "/Groups/%ZZ",
        "/Users?attributes=%5B",
        "/Users?excludedAttributes=urn:",
        "/Users?sortBy=urn:x:",
        "/Users?count=99999999999999999999",
        "/Users?startIndex=-99999999999999999",
        "/nope",
        "/Schemas/nope",
        "/ResourceTypes/x/y",
        "/Users?filter=%FF",
    ] {
        refused(&format!("GET {path}"), &c.get(path));
    }
    // Nothing malformed changed the user or the group.
    assert_eq!(c.get(&user).json()["userName"], "robust@example.com");
    assert_eq!(c.get(&group).json()["displayName"], "R");
}
