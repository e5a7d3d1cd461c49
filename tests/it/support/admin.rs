//! Helpers for the admin page tests: the setup link from the server log, forms,
//! sign-in, and pulling values out of the returned HTML.

use super::{Client, Resp, Server};

pub const PASSWORD: &str = "correct horse battery staple";

/// The last setup link the server logged (waits for it with a deadline).
pub fn setup_link(s: &Server) -> String {
    let log = s.wait_for_log("/admin/setup?code=");
    let i = log.rfind("/admin/setup?code=").expect("setup link");
    // https://, or http:// with TLS off (behind a proxy).
    let start = log[..i].rfind("http").expect("link scheme");
    let end = log[i..]
        .find(char::is_whitespace)
        .map_or(log.len(), |e| i + e);
    log[start..end].to_owned()
}

/// The address of the listener serving the admin page, from the log's "admin page:"
/// line: behind a proxy (`public_url` set) the server's own address is not in the
/// SCIM URL it announces.
pub fn admin_page_addr(s: &Server) -> String {
    let log = s.wait_for_log("admin page: http");
    let i = log.rfind("admin page: http").expect("admin page line");
    let url = &log[i + "admin page: ".len()..];
    let url = url.split_whitespace().next().unwrap_or_default();
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    rest.split('/').next().unwrap_or_default().to_owned()
}

/// The code of a setup link.
pub fn code_of(link: &str) -> String {
    link.split("code=").nth(1).expect("code").to_owned()
}

/// The path and query of a URL (`https://host/admin/x?y` → `/admin/x?y`).
pub fn path_of(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    rest.find('/').map_or("/".into(), |i| rest[i..].to_owned())
}

pub fn form_body(fields: &[(&str, &str)]) -> Vec<u8> {
    let mut s = form_urlencoded::Serializer::new(String::new());
    for (k, v) in fields {
        s.append_pair(k, v);
    }
    s.finish().into_bytes()
}

/// POSTs a form, with the session cookie when given.
pub fn post_form(c: &Client, path: &str, cookie: Option<&str>, fields: &[(&str, &str)]) -> Resp {
    let cookie_header = cookie.map(|c| format!("scimbridge_admin={c}"));
    let mut headers = vec![("content-type", "application/x-www-form-urlencoded")];
    if let Some(h) = &cookie_header {
        headers.push(("cookie", h.as_str()));
    }
    c.send("POST", path, &headers, Some(form_body(fields)))
}

/// GETs an admin page with the session cookie.
pub fn get_page(c: &Client, path: &str, cookie: &str) -> Resp {
    let h = format!("scimbridge_admin={cookie}");
    c.send("GET", path, &[("cookie", h.as_str())], None)
}

pub fn text(r: &Resp) -> String {
    String::from_utf8_lossy(&r.body).into_owned()
}

/// The account the setup helpers create and `login` signs in as (the setup page's
/// default for the first account).
pub const ADMIN: &str = "admin";

/// Sets a password through a setup link (the first account's link names it "admin";
/// another account's link ignores the name).
pub fn set_password(c: &Client, link: &str, password: &str) -> Resp {
    post_form(
        c,
        "/admin/setup",
        None,
        &[
            ("code", &code_of(link)),
            ("name", ADMIN),
            ("password", password),
            ("confirm", password),
        ],
    )
}

/// Signs in as "admin"; returns the response (303 with a cookie on success).
pub fn login_response(c: &Client, password: &str) -> Resp {
    login_as_response(c, ADMIN, password)
}

/// Signs in as `name`; returns the response.
pub fn login_as_response(c: &Client, name: &str, password: &str) -> Resp {
    post_form(
        c,
        "/admin/login",
        None,
        &[("name", name), ("password", password)],
    )
}

/// Signs in as `name` and returns the session id.
pub fn login_as(c: &Client, name: &str, password: &str) -> String {
    let r = login_as_response(c, name, password);
    assert_eq!(r.status, 303, "sign-in as {name} failed: {}", text(&r));
    session_cookie(&r).expect("session cookie")
}

/// The session id from a sign-in response's Set-Cookie.
pub fn session_cookie(r: &Resp) -> Option<String> {
    let sc = r.header("set-cookie")?;
    let v = sc.strip_prefix("scimbridge_admin=")?;
    Some(v.split(';').next()?.to_owned()).filter(|v| !v.is_empty())
}

/// Signs in and returns the session id.
pub fn login(c: &Client, password: &str) -> String {
    login_as(c, ADMIN, password)
}

/// A fresh server with the admin password set; returns (server, session id).
pub fn signed_in_server(extra: &[&str]) -> (Server, String) {
    let s = Server::start_with(extra);
    let c = s.client();
    let r = set_password(&c, &setup_link(&s), PASSWORD);
    assert_eq!(r.status, 303, "{}", text(&r));
    let cookie = login(&c, PASSWORD);
    (s, cookie)
}

/// The value of the hidden CSRF field on a page.
pub fn csrf(html: &str) -> String {
    attr_after(html, "name=\"csrf\" value=\"").expect("csrf field")
}

/// The text from `marker` up to the next double quote, HTML entities decoded.
pub fn attr_after(html: &str, marker: &str) -> Option<String> {
    let i = html.find(marker)? + marker.len();
    let end = html[i..].find('"')? + i;
    Some(
        html[i..end]
            .replace("&quot;", "\"")
            .replace("&#x27;", "'")
            .replace("&lt;", "<")
            .replace("&gt;", ">")
            .replace("&amp;", "&"),
    )
}

/// Issues a token on the Tokens page; returns its secret.
pub fn issue_on_page(c: &Client, cookie: &str, name: &str, scope: &str) -> String {
    issue_on_page_with(c, cookie, &[("name", name), ("scope", scope)])
}

/// `issue_on_page` with the form's fields given (`name`, `scope`, `expires_days`).
pub fn issue_on_page_with(c: &Client, cookie: &str, fields: &[(&str, &str)]) -> String {
    let r = post_token_form(c, cookie, fields);
    assert_eq!(r.status, 200, "{}", text(&r));
    attr_after(&text(&r), "id=\"secret\" class=\"mono\" readonly value=\"").expect("secret shown")
}

/// Posts the Tokens page's issue form with `fields` (and the page's CSRF token);
/// returns the response, whatever its status (a refused name answers 400).
pub fn post_token_form(c: &Client, cookie: &str, fields: &[(&str, &str)]) -> Resp {
    let page = text(&get_page(c, "/admin/tokens", cookie));
    let csrf = csrf(&page);
    let mut form = vec![("csrf", csrf.as_str())];
    form.extend_from_slice(fields);
    post_form(c, "/admin/tokens", Some(cookie), &form)
}

/// The id of the token row named `name` on the Tokens page.
pub fn token_id(page: &str, name: &str) -> String {
    let row = page
        .find(&format!("<tr data-token=\"{name}\""))
        .expect("token row");
    attr_after(&page[row..], "name=\"id\" value=\"").expect("token id")
}

/// Posts the form of a Tokens page row for the token `id` (the CSRF token from a
/// fresh page): `rotate`, or `revoke` unconfirmed (the page answers with the
/// question); returns the response.
pub fn post_row_form(c: &Client, cookie: &str, action: &str, id: &str) -> Resp {
    let page = text(&get_page(c, "/admin/tokens", cookie));
    post_form(
        c,
        &format!("/admin/tokens/{action}"),
        Some(cookie),
        &[("csrf", &csrf(&page)), ("id", id)],
    )
}

/// Revokes the token row named `name` on the Tokens page, confirmed (the page asks
/// first); returns the response (303 back to the Tokens page on success).
pub fn revoke_on_page(c: &Client, cookie: &str, name: &str) -> Resp {
    let page = text(&get_page(c, "/admin/tokens", cookie));
    post_form(
        c,
        "/admin/tokens/revoke",
        Some(cookie),
        &[
            ("csrf", &csrf(&page)),
            ("id", &token_id(&page, name)),
            ("confirm", "yes"),
        ],
    )
}
