//! The admin page's HTML: small template functions that take plain values and return
//! a page. Every piece of user or directory data goes through `esc`; nothing here
//! reads the store, the clock or the request. No inline script or style: the only
//! assets are `/admin/static/style.css` and `/admin/static/copy.js`.

use std::fmt::Write;
use std::time::Duration;

use serde::Serialize;

use super::activity::ScimRequestRecord;
use crate::app::tokens::TokenInfo;
use crate::migrate::readiness::{Finding, ReadinessReport};
use crate::migrate::report::{MigrationStatus, Progress, PushOutcome, VerifyReport};
use crate::migrate::service::CutoverReport;
use crate::scim::resource::Reference;
use crate::scim::schema::ResourceType;
use crate::secret::Secret;
use crate::store::{Event, Phase};

/// Escapes text for HTML element content and quoted attribute values.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#x27;"),
            c => out.push(c),
        }
    }
    out
}

/// Percent-encodes a query-string value.
pub fn url_param(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// An RFC 3339 time (text or `Timestamp`) as `YYYY-MM-DD HH:MM:SS UTC`.
pub fn when(t: impl std::fmt::Display) -> String {
    let t = t.to_string().replacen('T', " ", 1);
    let t = match t.find('.') {
        Some(i) => t[..i].to_owned(),
        None => t.trim_end_matches('Z').to_owned(),
    };
    format!("{} UTC", t.trim_end_matches('Z'))
}

pub fn duration(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..=59 => format!("{s} s"),
        60..=3599 => format!("{} min", s / 60),
        3600..=86_399 => format!("{} h {} min", s / 3600, (s % 3600) / 60),
        _ => format!("{} d {} h", s / 86_400, (s % 86_400) / 3600),
    }
}

pub fn bytes(n: u64) -> String {
    match n {
        0..=1023 => format!("{n} B"),
        1024..=1_048_575 => format!("{:.1} KiB", n as f64 / 1024.0),
        1_048_576..=1_073_741_823 => format!("{:.1} MiB", n as f64 / 1_048_576.0),
        _ => format!("{:.2} GiB", n as f64 / 1_073_741_824.0),
    }
}

/// The hidden field every state-changing form carries.
fn csrf_field(csrf: &str) -> String {
    format!(
        "<input type=\"hidden\" name=\"csrf\" value=\"{}\">",
        esc(csrf)
    )
}

/// What every signed-in page shares.
pub struct Chrome<'a> {
    pub title: &'a str,
    /// The nav entry to highlight ("dashboard", "tokens", …).
    pub active: &'a str,
    pub csrf: &'a str,
    pub flash: Option<&'a str>,
}

const NAV: [(&str, &str, &str); 5] = [
    ("dashboard", "/admin", "Dashboard"),
    ("tokens", "/admin/tokens", "Tokens"),
    ("users", "/admin/users", "Users"),
    ("groups", "/admin/groups", "Groups"),
    ("migration", "/admin/migration", "Migration"),
];

fn head(title: &str) -> String {
    format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <meta name=\"referrer\" content=\"no-referrer\">\
         <title>{} · scimbridge</title>\
         <link rel=\"stylesheet\" href=\"/admin/static/style.css\">\
         <script src=\"/admin/static/copy.js\" defer></script></head>\n",
        esc(title)
    )
}

/// A signed-in page: header with navigation and sign-out, flash message, content.
pub fn layout(c: &Chrome, content: &str) -> String {
    let mut out = head(c.title);
    out.push_str(
        "<body><header class=\"top\"><a class=\"brand\" href=\"/admin\">scimbridge</a><nav>",
    );
    for (key, href, label) in NAV {
        let current = if key == c.active {
            " aria-current=\"page\""
        } else {
            ""
        };
        let _ = write!(out, "<a href=\"{href}\"{current}>{label}</a>");
    }
    let _ = write!(
        out,
        "</nav><form class=\"signout\" method=\"post\" action=\"/admin/logout\">{}\
         <button type=\"submit\" class=\"link\">Sign out</button></form></header>\n<main>",
        csrf_field(c.csrf)
    );
    if let Some(f) = c.flash {
        let _ = write!(out, "<p class=\"flash\" role=\"status\">{}</p>", esc(f));
    }
    let _ = write!(
        out,
        "<h1>{}</h1>\n{content}</main></body></html>\n",
        esc(c.title)
    );
    out
}

/// A page for someone not signed in (login, setup, refusals).
pub fn public_page(title: &str, content: &str) -> String {
    let mut out = head(title);
    let _ = write!(
        out,
        "<body class=\"narrow\"><header class=\"top\"><span class=\"brand\">scimbridge</span></header>\
         <main><h1>{}</h1>\n{content}</main></body></html>\n",
        esc(title)
    );
    out
}

pub fn login(error: Option<&str>, notice: Option<&str>, password_set: bool) -> String {
    let mut c = String::new();
    if let Some(n) = notice {
        let _ = write!(c, "<p class=\"flash\" role=\"status\">{}</p>", esc(n));
    }
    if let Some(e) = error {
        let _ = write!(c, "<p class=\"error\" role=\"alert\">{}</p>", esc(e));
    }
    if !password_set {
        c.push_str(
            "<p class=\"note\">No admin password is set yet. Open the one-time setup link that the \
             server printed in its log when it started, or run <code>scimbridge admin reset-password</code> \
             on the server for a new link.</p>",
        );
    }
    c.push_str(
        "<form method=\"post\" action=\"/admin/login\" class=\"card\">\
         <label for=\"password\">Admin password</label>\
         <input id=\"password\" name=\"password\" type=\"password\" autocomplete=\"current-password\" required autofocus>\
         <button type=\"submit\">Sign in</button></form>",
    );
    public_page("Sign in", &c)
}

pub fn setup(code: &str, error: Option<&str>) -> String {
    let mut c = String::new();
    if let Some(e) = error {
        let _ = write!(c, "<p class=\"error\" role=\"alert\">{}</p>", esc(e));
    }
    let _ = write!(
        c,
        "<p>Choose the password for this bridge's admin page: at least {} characters, \
         not a common password (or common words with digits or symbols added), not a keyboard \
         or alphabet run, with at least 6 different characters. Four random words work well. \
         This link works once; afterwards every admin signs in with the new password.</p>\
         <form method=\"post\" action=\"/admin/setup\" class=\"card\">\
         <input type=\"hidden\" name=\"code\" value=\"{}\">\
         <label for=\"password\">New password</label>\
         <input id=\"password\" name=\"password\" type=\"password\" autocomplete=\"new-password\" minlength=\"{}\" required autofocus>\
         <label for=\"confirm\">Repeat the password</label>\
         <input id=\"confirm\" name=\"confirm\" type=\"password\" autocomplete=\"new-password\" minlength=\"{}\" required>\
         <button type=\"submit\">Set password</button></form>",
        crate::auth::admin::MIN_PASSWORD_CHARS,
        esc(code),
        crate::auth::admin::MIN_PASSWORD_CHARS,
        crate::auth::admin::MIN_PASSWORD_CHARS
    );
    public_page("Set the admin password", &c)
}

/// A short explanation page (refusals, not found).
pub fn message(title: &str, text: &str, link: Option<(&str, &str)>) -> String {
    let mut c = format!("<p>{}</p>", esc(text));
    if let Some((href, label)) = link {
        let _ = write!(c, "<p><a href=\"{}\">{}</a></p>", esc(href), esc(label));
    }
    public_page(title, &c)
}

fn copy_button(target: &str) -> String {
    format!(
        "<button type=\"button\" class=\"copy\" data-copy=\"{}\" hidden>Copy</button>",
        esc(target)
    )
}

// ---- dashboard ---------------------------------------------------------------

/// The served certificate, for the dashboard's Health table.
pub struct CertSummary {
    /// Where it came from, in words.
    pub source: &'static str,
    pub subject: Option<String>,
    pub issuer: String,
    pub names: Vec<String>,
    pub not_after: String,
    pub days_left: i64,
    /// Each warning in one sentence.
    pub warnings: Vec<String>,
    pub acme: Option<AcmeSummary>,
}

/// ACME mode's renewal state.
pub struct AcmeSummary {
    pub directory: String,
    pub next_renewal: Option<String>,
    /// The last failure in words, with when it happened.
    pub last_error: Option<(String, String)>,
}

impl CertSummary {
    pub fn new(v: &crate::tls::CertView, now: crate::clock::Timestamp) -> CertSummary {
        let (subject, issuer, names, not_after) = match &v.info {
            Some(i) => (
                i.subject_cn.clone(),
                i.issuer.clone(),
                i.names.clone(),
                i.not_after,
            ),
            None => (None, "(unreadable)".to_owned(), Vec::new(), now),
        };
        CertSummary {
            source: v.source.describe(),
            subject,
            issuer,
            names,
            not_after: when(not_after),
            days_left: not_after.since(now).whole_days(),
            warnings: v.warnings.iter().map(ToString::to_string).collect(),
            acme: v.acme.as_ref().map(|a| AcmeSummary {
                directory: a.directory.clone(),
                next_renewal: a.next_renewal.map(when),
                last_error: a
                    .last_error
                    .as_ref()
                    .map(|e| (e.message.clone(), when(e.at))),
            }),
        }
    }
}

pub struct Dashboard {
    pub scim_url: String,
    pub users: u64,
    pub inactive_users: u64,
    pub groups: u64,
    pub active_tokens: usize,
    pub requests: Vec<ScimRequestRecord>,
    pub events: Vec<Event>,
    pub version: &'static str,
    pub uptime: Duration,
    pub db_bytes: u64,
    /// `None` when TLS is off.
    pub cert: Option<CertSummary>,
    pub tls_on: bool,
    pub phase: Phase,
    pub target: Option<String>,
    /// The migration's last push or mirror error: shown as an error, whatever the
    /// phase says.
    pub migration_error: Option<String>,
    /// Attributes no schema defines that SCIM requests named (`[scim]
    /// unknown_attributes`), with what the server did and a declaration to paste.
    pub unknown: Vec<UnknownRow>,
    /// "reject" or "drop".
    pub unknown_policy: &'static str,
}

/// One unknown attribute on the dashboard.
pub struct UnknownRow {
    pub resource_type: &'static str,
    pub name: String,
    pub count: u64,
    /// "refused" or "dropped".
    pub action: &'static str,
    pub last_seen: String,
    /// A `[[scim.extensions]]` declaration that would have it stored.
    pub declaration: String,
}

/// The dashboard section that tells the admin what the identity provider sends that
/// the bridge neither stores nor serves, and how to have it stored.
fn unknown_attributes(d: &Dashboard) -> String {
    let mut o = String::new();
    if d.unknown.is_empty() {
        return o;
    }
    let _ = write!(
        o,
        "<section class=\"card\"><h2>Attributes no schema defines</h2>\
         <p>Your identity provider sent these attributes. The bridge {} them \
         (<code>[scim] unknown_attributes = \"{}\"</code>): it stores only what it can serve \
         back and carry into a migration. To keep one, declare it as a schema extension in \
         the config file (the declaration below pastes as is) and restart; or remove the \
         mapping in your identity provider.</p>\
         <div class=\"scroll\"><table><thead><tr><th>Resource</th><th>Attribute</th>\
         <th>Requests</th><th>Last</th><th>Declaration</th></tr></thead><tbody>",
        if d.unknown_policy == "drop" {
            "dropped"
        } else {
            "refused (400) requests with"
        },
        esc(d.unknown_policy)
    );
    for (i, u) in d.unknown.iter().enumerate() {
        let id = format!("decl-{i}");
        let _ = write!(
            o,
            "<tr><td>{}</td><td><code>{}</code></td><td>{} {}</td><td>{}</td>\
             <td><pre class=\"json\" id=\"{id}\">{}</pre>{}</td></tr>",
            esc(u.resource_type),
            esc(&u.name),
            u.count,
            esc(u.action),
            esc(&when(&u.last_seen)),
            esc(&u.declaration),
            copy_button(&id)
        );
    }
    o.push_str("</tbody></table></div></section>");
    o
}

fn cert_rows(c: &CertSummary) -> String {
    let mut o = String::new();
    let class = if c.days_left < 14 {
        " class=\"bad\""
    } else {
        ""
    };
    let _ = write!(
        o,
        "<tr><th>Certificate</th><td>{}</td></tr><tr><th>Source</th><td>{}</td></tr>\
         <tr><th>Issuer</th><td>{}</td></tr><tr><th>Names</th><td>{}</td></tr>\
         <tr><th>Expires</th><td{class}>{} ({} days)</td></tr>",
        esc(c.subject.as_deref().unwrap_or("(no common name)")),
        esc(c.source),
        esc(&c.issuer),
        esc(&c.names.join(", ")),
        esc(&c.not_after),
        c.days_left
    );
    for w in &c.warnings {
        let _ = write!(
            o,
            "<tr><th>Certificate warning</th><td class=\"bad\">{}</td></tr>",
            esc(w)
        );
    }
    if let Some(a) = &c.acme {
        let _ = write!(
            o,
            "<tr><th>ACME directory</th><td>{}</td></tr><tr><th>Next renewal</th><td>{}</td></tr>",
            esc(&a.directory),
            esc(a.next_renewal.as_deref().unwrap_or("not scheduled yet"))
        );
        match &a.last_error {
            Some((message, at)) => {
                let _ = write!(
                    o,
                    "<tr><th>Last ACME error</th><td class=\"bad\">{} ({})</td></tr>",
                    esc(message),
                    esc(at)
                );
            }
            None => o.push_str("<tr><th>Last ACME error</th><td>none</td></tr>"),
        }
    }
    o
}

fn outcome(status: u16) -> String {
    let (class, text) = match status {
        200..=299 => ("ok", "ok"),
        304 => ("ok", "not modified"),
        401 => ("bad", "unauthenticated"),
        403 => ("bad", "forbidden"),
        404 => ("warn", "not found"),
        409 => ("warn", "conflict"),
        410 => ("warn", "gone (cut over)"),
        412 => ("warn", "precondition failed"),
        429 => ("warn", "throttled"),
        400..=499 => ("warn", "refused"),
        _ => ("bad", "server error"),
    };
    format!("<span class=\"pill {class}\">{status} {text}</span>")
}

fn resource_link(rt_name: &str, id: &str) -> String {
    let section = match rt_name {
        "Users" | "User" => "users",
        "Groups" | "Group" => "groups",
        _ => return esc(id),
    };
    format!(
        "<a href=\"/admin/{section}/{}\"><code>{}</code></a>",
        url_param(id),
        esc(id)
    )
}

fn decommission(target: Option<&str>) -> String {
    let t = esc(target.unwrap_or("the hosted service's SCIM URL"));
    format!(
        "<section class=\"card done\"><h2>This bridge has cut over: it can be decommissioned</h2>\
         <p>SCIM writes are refused with an error that names the new service; reads keep working. \
         Repoint your identity provider at the hosted service, then stop this bridge \
         (keep an export first: <code>scimbridge export --out FILE</code>).</p>\
         <h3>Microsoft Entra ID</h3><ol>\
         <li>Enterprise applications → your app → Provisioning → Admin Credentials.</li>\
         <li><b>Tenant URL</b>: <code>{t}</code></li>\
         <li><b>Secret Token</b>: the hosted service's API token.</li>\
         <li>Test Connection, Save, then restart provisioning.</li></ol>\
         <h3>Okta</h3><ol>\
         <li>Applications → your app → Provisioning → Integration → Edit.</li>\
         <li><b>Base URL</b> / <b>SCIM connector base URL</b>: <code>{t}</code></li>\
         <li><b>API token</b> (HTTP header authentication): the hosted service's API token.</li>\
         <li>Test Connector Configuration, then Save.</li></ol></section>"
    )
}

pub fn dashboard(c: &Chrome, d: &Dashboard) -> String {
    let mut o = String::new();
    if d.phase == Phase::CutOver {
        o.push_str(&decommission(d.target.as_deref()));
    }
    let _ = write!(
        o,
        "<section class=\"card\"><h2>Connect your identity provider</h2>\
         <p>SCIM URL (Entra ID: Tenant URL; Okta: SCIM connector base URL):</p>\
         <p class=\"copyrow\"><code id=\"scim-url\" class=\"big\">{}</code>{}</p>\
         <p>Secret token: issue one on the <a href=\"/admin/tokens\">Tokens</a> page ({} active).</p></section>",
        esc(&d.scim_url),
        copy_button("scim-url"),
        d.active_tokens
    );
    o.push_str(&unknown_attributes(d));
    let _ = write!(
        o,
        "<section class=\"stats\">\
         <a class=\"stat\" href=\"/admin/users\"><b>{}</b> users<small>{} active, {} inactive</small></a>\
         <a class=\"stat\" href=\"/admin/groups\"><b>{}</b> groups</a>\
         <a class=\"stat\" href=\"/admin/migration\"><b>{}</b> migration{}</a></section>",
        d.users,
        d.users.saturating_sub(d.inactive_users),
        d.inactive_users,
        d.groups,
        esc(d.phase.as_str()),
        d.migration_error
            .as_deref()
            .map(|e| format!("<small class=\"bad\" id=\"migration-error\">error: {}</small>", esc(e)))
            .unwrap_or_default()
    );
    o.push_str("<section><h2>Recent SCIM requests</h2>");
    if d.requests.is_empty() {
        o.push_str("<p class=\"note\">No SCIM request since the server started.</p>");
    } else {
        o.push_str(
            "<div class=\"scroll\"><table><thead><tr><th>Time</th><th>Token</th><th>Operation</th>\
             <th>Resource</th><th>Outcome</th></tr></thead><tbody>",
        );
        for r in &d.requests {
            let resource = match &r.id {
                Some(id) => format!("{} {}", esc(&r.endpoint), resource_link(&r.endpoint, id)),
                None => esc(&r.endpoint),
            };
            let _ = write!(
                o,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{resource}</td><td>{}</td></tr>",
                esc(&when(r.time)),
                r.token
                    .as_deref()
                    .map(esc)
                    .unwrap_or_else(|| "<i>none</i>".into()),
                esc(&r.method),
                outcome(r.status)
            );
        }
        o.push_str("</tbody></table></div>");
    }
    o.push_str("<p class=\"note\">Kept in memory: the last 200 requests since the server started.</p></section>");
    o.push_str("<section><h2>Recent changes (audit log)</h2>");
    if d.events.is_empty() {
        o.push_str("<p class=\"note\">No change recorded yet.</p>");
    } else {
        o.push_str(
            "<div class=\"scroll\"><table><thead><tr><th>Time</th><th>Token</th><th>Operation</th>\
             <th>Resource</th><th>Outcome</th></tr></thead><tbody>",
        );
        for e in &d.events {
            let _ = write!(
                o,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{} {}</td><td><span class=\"pill ok\">done</span></td></tr>",
                esc(&when(e.time)),
                esc(&e.actor.name),
                esc(e.op.as_str()),
                esc(e.resource_type.name()),
                resource_link(e.resource_type.name(), &e.id)
            );
        }
        o.push_str("</tbody></table></div>");
    }
    o.push_str("</section>");
    let cert = match (&d.cert, d.tls_on) {
        (Some(c), _) => cert_rows(c),
        (None, true) => "<tr><th>Certificate</th><td>unreadable</td></tr>".into(),
        (None, false) => {
            "<tr><th>TLS</th><td class=\"bad\">off (behind a TLS-terminating proxy)</td></tr>"
                .into()
        }
    };
    let _ = write!(
        o,
        "<section><h2>Health</h2><table class=\"facts\"><tbody>\
         <tr><th>Version</th><td>{}</td></tr><tr><th>Uptime</th><td>{}</td></tr>\
         <tr><th>Database size</th><td>{}</td></tr>{cert}</tbody></table></section>",
        esc(d.version),
        duration(d.uptime),
        bytes(d.db_bytes)
    );
    layout(c, &o)
}

// ---- tokens ------------------------------------------------------------------

pub struct TokenRow {
    pub record: TokenInfo,
    pub state: &'static str,
    pub last_used: Option<crate::clock::Timestamp>,
}

/// A token that was just issued: its secret is on this page and nowhere else.
pub struct Issued {
    pub name: String,
    pub scope: &'static str,
    pub secret: Secret,
}

pub fn tokens(
    c: &Chrome,
    rows: &[TokenRow],
    issued: Option<&Issued>,
    error: Option<&str>,
) -> String {
    let mut o = String::new();
    if let Some(i) = issued {
        let _ = write!(
            o,
            "<section class=\"card secret\"><h2>Token \"{}\" issued ({})</h2>\
             <p><b>Copy it now: it is shown only this once</b> and stored only as a hash. \
             Paste it into your identity provider as the Secret Token (Entra ID) or API token (Okta).</p>\
             <p class=\"copyrow\"><input id=\"secret\" class=\"mono\" readonly value=\"{}\" aria-label=\"token secret\">{}</p></section>",
            esc(&i.name),
            esc(i.scope),
            esc(i.secret.expose()),
            copy_button("secret")
        );
    }
    if let Some(e) = error {
        let _ = write!(o, "<p class=\"error\" role=\"alert\">{}</p>", esc(e));
    }
    let _ = write!(
        o,
        "<section class=\"card\"><h2>Issue a token</h2>\
         <form method=\"post\" action=\"/admin/tokens\" class=\"grid\">{}\
         <label for=\"name\">Name</label><input id=\"name\" name=\"name\" required maxlength=\"100\" placeholder=\"e.g. entra-id\">\
         <label for=\"expires\">Expires after (days)</label><input id=\"expires\" name=\"expires_days\" type=\"number\" min=\"1\" max=\"3650\" placeholder=\"never\">\
         <fieldset><legend>Scope</legend>\
         <label class=\"inline\"><input type=\"radio\" name=\"scope\" value=\"read-write\" checked> read-write (for provisioning)</label>\
         <label class=\"inline\"><input type=\"radio\" name=\"scope\" value=\"read-only\"> read-only (writes answer 403)</label></fieldset>\
         <button type=\"submit\">Issue token</button></form></section>",
        csrf_field(c.csrf)
    );
    o.push_str("<section><h2>Tokens</h2>");
    if rows.is_empty() {
        o.push_str("<p class=\"note\">No token yet.</p>");
    } else {
        o.push_str(
            "<div class=\"scroll\"><table id=\"tokens\"><thead><tr><th>Name</th><th>Scope</th><th>Created</th>\
             <th>Last used</th><th>Expires</th><th>State</th><th></th></tr></thead><tbody>",
        );
        for r in rows {
            let t = &r.record;
            let action = if r.state == "active" {
                format!(
                    "<form method=\"post\" action=\"/admin/tokens/revoke\">{}\
                     <input type=\"hidden\" name=\"id\" value=\"{}\">\
                     <button type=\"submit\" class=\"danger\" aria-label=\"Revoke {}\">Revoke</button></form>",
                    csrf_field(c.csrf),
                    esc(&t.id),
                    esc(&t.name)
                )
            } else {
                String::new()
            };
            let state_class = if r.state == "active" { "ok" } else { "bad" };
            let _ = write!(
                o,
                "<tr data-token=\"{}\"><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td>\
                 <td><span class=\"pill {state_class}\">{}</span></td><td>{action}</td></tr>",
                esc(&t.name),
                esc(&t.name),
                esc(t.scope.as_str()),
                esc(&when(t.created)),
                r.last_used
                    .map(|u| esc(&when(u)))
                    .unwrap_or_else(|| "never".into()),
                t.expires
                    .map(|u| esc(&when(u)))
                    .unwrap_or_else(|| "never".into()),
                esc(r.state)
            );
        }
        o.push_str("</tbody></table></div>");
    }
    o.push_str(
        "<p class=\"note\">Revoking takes effect on the token's next request.</p></section>",
    );
    layout(c, &o)
}

// ---- users and groups --------------------------------------------------------

pub struct ListRow {
    pub id: String,
    pub name: String,
    pub detail: String,
    pub email: Option<String>,
    pub active: Option<bool>,
    pub modified: String,
}

pub struct ListView {
    pub rt: ResourceType,
    pub query: String,
    pub rows: Vec<ListRow>,
    /// The cursor for the next page, when there is one.
    pub next_after: Option<String>,
    pub is_first_page: bool,
    pub total: u64,
}

fn section(rt: ResourceType) -> &'static str {
    match rt {
        ResourceType::User => "users",
        ResourceType::Group => "groups",
    }
}

pub fn list(c: &Chrome, v: &ListView) -> String {
    let sec = section(v.rt);
    let (placeholder, name_col, detail_col) = match v.rt {
        ResourceType::User => ("userName, displayName or email", "userName", "Name"),
        ResourceType::Group => ("displayName", "displayName", "Members"),
    };
    let mut o = format!(
        "<form method=\"get\" action=\"/admin/{sec}\" class=\"search\" role=\"search\">\
         <input name=\"q\" type=\"search\" value=\"{}\" placeholder=\"{placeholder}\" aria-label=\"Search\">\
         <button type=\"submit\">Search</button></form>",
        esc(&v.query)
    );
    let _ = write!(
        o,
        "<p class=\"note\">{} in the directory. Read-only: your identity provider is the source of truth.</p>",
        v.total
    );
    if v.rows.is_empty() {
        o.push_str("<p>Nothing found.</p>");
    } else {
        let _ = write!(
            o,
            "<div class=\"scroll\"><table><thead><tr><th>{name_col}</th><th>{detail_col}</th>"
        );
        if v.rt == ResourceType::User {
            o.push_str("<th>Email</th><th>Active</th>");
        }
        o.push_str("<th>Last modified</th></tr></thead><tbody>");
        for r in &v.rows {
            let _ = write!(
                o,
                "<tr><td><a href=\"/admin/{sec}/{}\">{}</a></td><td>{}</td>",
                url_param(&r.id),
                esc(&r.name),
                esc(&r.detail)
            );
            if v.rt == ResourceType::User {
                let _ = write!(
                    o,
                    "<td>{}</td><td>{}</td>",
                    esc(r.email.as_deref().unwrap_or("")),
                    match r.active {
                        Some(false) => "<span class=\"pill warn\">inactive</span>",
                        _ => "<span class=\"pill ok\">active</span>",
                    }
                );
            }
            let _ = write!(o, "<td>{}</td></tr>", esc(&when(&r.modified)));
        }
        o.push_str("</tbody></table></div>");
    }
    let q = if v.query.is_empty() {
        String::new()
    } else {
        format!("q={}&", url_param(&v.query))
    };
    o.push_str("<nav class=\"pager\">");
    if !v.is_first_page {
        let _ = write!(
            o,
            "<a href=\"/admin/{sec}?{}\">First page</a>",
            q.trim_end_matches('&')
        );
    }
    if let Some(after) = &v.next_after {
        let _ = write!(
            o,
            "<a href=\"/admin/{sec}?{q}after={}\">Next page</a>",
            url_param(after)
        );
    }
    o.push_str("</nav>");
    layout(c, &o)
}

pub struct DetailView {
    pub rt: ResourceType,
    pub facts: Vec<(&'static str, String)>,
    /// Attributes of schema extensions (enterprise and declared ones): (schema URN,
    /// attribute name, value as text).
    pub extensions: Vec<(String, String, String)>,
    pub refs: Vec<Reference>,
    pub json: String,
}

pub fn detail(c: &Chrome, v: &DetailView) -> String {
    let mut o = String::from("<table class=\"facts\"><tbody>");
    for (k, val) in &v.facts {
        let _ = write!(o, "<tr><th>{}</th><td>{}</td></tr>", esc(k), esc(val));
    }
    o.push_str("</tbody></table>");
    if !v.extensions.is_empty() {
        o.push_str("<h2>Extension attributes</h2><table class=\"facts\"><tbody>");
        let mut last_urn = "";
        for (urn, name, value) in &v.extensions {
            if urn != last_urn {
                let _ = write!(
                    o,
                    "<tr><th colspan=\"2\"><small>{}</small></th></tr>",
                    esc(urn)
                );
                last_urn = urn;
            }
            let _ = write!(o, "<tr><th>{}</th><td>{}</td></tr>", esc(name), esc(value));
        }
        o.push_str("</tbody></table>");
    }
    let heading = match v.rt {
        ResourceType::User => "Groups",
        ResourceType::Group => "Members",
    };
    let _ = write!(o, "<h2>{heading} ({})</h2>", v.refs.len());
    if v.refs.is_empty() {
        o.push_str("<p class=\"note\">None.</p>");
    } else {
        o.push_str("<ul class=\"refs\">");
        for r in &v.refs {
            let _ = write!(
                o,
                "<li><a href=\"/admin/{}/{}\">{}</a> <small>{}</small></li>",
                section(r.rt),
                url_param(&r.id),
                esc(r.display.as_deref().unwrap_or(&r.id)),
                if r.indirect {
                    "Group (indirect)"
                } else {
                    r.rt.name()
                }
            );
        }
        o.push_str("</ul>");
    }
    let _ = write!(
        o,
        "<h2>SCIM representation</h2><pre class=\"json\">{}</pre>\
         <p class=\"note\">Read-only: change this in your identity provider.</p>\
         <p><a href=\"/admin/{}\">Back to the list</a></p>",
        esc(&v.json),
        section(v.rt)
    );
    layout(c, &o)
}

// ---- migration ---------------------------------------------------------------

/// What a finished background job produced (shown as JSON under "Result").
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum JobOutcome {
    Push(PushOutcome),
    Verify(VerifyReport),
    Cutover(CutoverReport),
}

/// A background migration job as the page shows it.
pub struct JobView {
    pub kind: &'static str,
    pub started: String,
    pub progress: Option<Progress>,
    pub finished: Option<String>,
    pub outcome: Option<Result<JobOutcome, String>>,
}

pub struct MigrationView {
    pub status: MigrationStatus,
    pub check: Option<(String, ReadinessReport)>,
    pub job: Option<JobView>,
}

const STEPS: [Phase; 6] = [
    Phase::NotStarted,
    Phase::Checked,
    Phase::Pushing,
    Phase::Mirroring,
    Phase::Verified,
    Phase::CutOver,
];

fn findings(title: &str, class: &str, list: &[Finding]) -> String {
    let mut o = format!("<h3>{} ({})</h3>", esc(title), list.len());
    if list.is_empty() {
        o.push_str("<p class=\"note\">None.</p>");
        return o;
    }
    for f in list {
        let _ = write!(
            o,
            "<div class=\"finding {class}\" data-code=\"{}\"><p><b>{}</b> <small>{}</small></p>",
            esc(f.code.as_str()),
            esc(&f.message),
            esc(f.code.as_str())
        );
        if !f.subjects.is_empty() {
            o.push_str("<div class=\"scroll\"><table><thead><tr><th>Type</th><th>Name</th><th>Email</th></tr></thead><tbody>");
            for s in f.subjects.iter().take(100) {
                let _ = write!(
                    o,
                    "<tr><td>{}</td><td><a href=\"/admin/{}/{}\">{}</a></td><td>{}</td></tr>",
                    esc(s.resource_type.name()),
                    match s.resource_type {
                        ResourceType::User => "users",
                        ResourceType::Group => "groups",
                    },
                    url_param(&s.id),
                    esc(&s.name),
                    esc(s.email.as_deref().unwrap_or(""))
                );
            }
            o.push_str("</tbody></table></div>");
            if f.subjects.len() > 100 {
                let _ = write!(
                    o,
                    "<p class=\"note\">… and {} more (<code>scimbridge migrate check --json</code> lists all).</p>",
                    f.subjects.len() - 100
                );
            }
        }
        o.push_str("</div>");
    }
    o
}

fn pretty(v: &impl Serialize) -> String {
    serde_json::to_string_pretty(v).unwrap_or_default()
}

/// What the target announced and which rule decided each match (typed values from
/// the migration status).
fn target_facts(st: &crate::migrate::report::MigrationStatus) -> String {
    let mut o = String::new();
    if let Some(caps) = &st.capabilities {
        o.push_str("<details id=\"capabilities\"><summary>Target capabilities</summary><ul>");
        for l in caps.lines() {
            let _ = write!(o, "<li>{}</li>", esc(&l));
        }
        o.push_str("</ul></details>");
    }
    if !st.rules.is_empty() {
        o.push_str("<details id=\"match-rules\" open><summary>Matching (last push)</summary><ul>");
        for (rule, n) in &st.rules {
            let _ = write!(o, "<li>{}: {n}</li>", esc(rule.as_str()));
        }
        o.push_str("</ul></details>");
    }
    let lost: Vec<&String> = st
        .state
        .omitted
        .iter()
        .chain(st.state.not_kept.iter())
        .collect();
    if !lost.is_empty() {
        o.push_str("<p class=\"note\">Not kept by the target: ");
        o.push_str(
            &lost
                .iter()
                .map(|a| format!("<code>{}</code>", esc(a)))
                .collect::<Vec<_>>()
                .join(", "),
        );
        o.push_str("</p>");
    }
    o
}

pub fn migration(c: &Chrome, v: &MigrationView) -> String {
    let st = &v.status;
    let phase = st.phase;
    let state = &st.state;
    let target = state.target.as_deref();
    let mut o = String::new();
    if phase == Phase::CutOver {
        o.push_str(&decommission(target));
    }
    o.push_str("<ol class=\"steps\" aria-label=\"Migration state\">");
    let current = STEPS.iter().position(|p| *p == phase).unwrap_or(0);
    for (i, p) in STEPS.iter().enumerate() {
        let (class, aria) = if i == current {
            ("current", " aria-current=\"step\"")
        } else if i < current {
            ("past", "")
        } else {
            ("", "")
        };
        let _ = write!(o, "<li class=\"{class}\"{aria}>{}</li>", esc(p.as_str()));
    }
    o.push_str("</ol>");

    // Readiness.
    let _ = write!(
        o,
        "<section class=\"card\"><h2>1. Readiness</h2>\
         <form method=\"post\" action=\"/admin/migration/check\">{}<button type=\"submit\">Run check</button></form>",
        csrf_field(c.csrf)
    );
    match &v.check {
        None => o.push_str("<p class=\"note\">Not run since the server started.</p>"),
        Some((at, r)) => {
            let verdict = if r.ready {
                "<p class=\"pill ok\">Ready: nothing blocks a migration.</p>"
            } else {
                "<p class=\"pill bad\">Not ready: fix the blockers in your identity provider, then run the check again.</p>"
            };
            let _ = write!(
                o,
                "<div id=\"readiness\"><p>Checked {} ({} users, {} groups).</p>{verdict}{}{}</div>",
                esc(&when(at)),
                r.users,
                r.groups,
                findings("Blockers", "blocker", &r.blockers),
                findings("Warnings", "warning", &r.warnings)
            );
        }
    }
    o.push_str("</section>");

    // Push and mirror.
    let p = &state.progress;
    let _ = write!(
        o,
        "<section class=\"card\"><h2>2. Push and mirror</h2><table class=\"facts\"><tbody>\
         <tr><th>Target</th><td>{}</td></tr>\
         <tr><th>Users pushed</th><td>{} / {}</td></tr><tr><th>Groups pushed</th><td>{} / {}</td></tr>\
         <tr><th>Created / updated</th><td>{} / {}</td></tr>\
         <tr><th>Mirror lag</th><td>{} events, {:.1} s</td></tr>",
        target.map(esc).unwrap_or_else(|| "none yet".into()),
        p.users_done,
        p.users_total,
        p.groups_done,
        p.groups_total,
        p.created,
        p.updated,
        st.lag.events,
        st.lag.seconds
    );
    if let Some(e) = state.last_error.as_deref() {
        let _ = write!(
            o,
            "<tr><th>Last error</th><td class=\"bad\" id=\"migration-error\">{}</td></tr>",
            esc(e)
        );
    }
    if state.push_incomplete {
        o.push_str("<tr><th>Push</th><td class=\"bad\">incomplete: start the push again to finish it</td></tr>");
    }
    o.push_str("</tbody></table>");
    o.push_str(&target_facts(st));
    if let Some(j) = &v.job {
        let _ = write!(
            o,
            "<div class=\"job\" id=\"job\"><p><b>{}</b> started {}",
            esc(j.kind),
            esc(&when(&j.started))
        );
        match (&j.finished, &j.outcome) {
            (Some(f), Some(Ok(val))) => {
                let _ = write!(
                    o,
                    ", finished {}: <span class=\"pill ok\">done</span></p><details><summary>Result</summary><pre class=\"json\">{}</pre></details>",
                    esc(&when(f)),
                    esc(&pretty(val))
                );
            }
            (Some(f), Some(Err(e))) => {
                let _ = write!(
                    o,
                    ", failed {}:</p><pre class=\"error\">{}</pre>",
                    esc(&when(f)),
                    esc(e)
                );
            }
            _ => {
                let _ = write!(
                    o,
                    ": <span class=\"pill warn\">running</span> — reload this page for progress.</p>{}",
                    j.progress
                        .as_ref()
                        .map(|p| format!("<pre class=\"json\">{}</pre>", esc(&p.to_string())))
                        .unwrap_or_default()
                );
            }
        }
        o.push_str("</div>");
    }
    if phase != Phase::CutOver {
        let _ = write!(
            o,
            "<form method=\"post\" action=\"/admin/migration/push\" class=\"grid\">{}\
             <label for=\"target\">Target SCIM URL</label><input id=\"target\" name=\"target\" type=\"url\" required placeholder=\"https://provisioning.example.com/scim/v2\" value=\"{}\">\
             <label for=\"token\">Target bearer token</label><input id=\"token\" name=\"token\" type=\"password\" required autocomplete=\"off\">\
             <label for=\"cacert\">CA certificate (PEM, optional)</label><textarea id=\"cacert\" name=\"cacert\" rows=\"3\" placeholder=\"-----BEGIN CERTIFICATE-----\"></textarea>\
             <label class=\"inline\"><input type=\"checkbox\" name=\"dry_run\" value=\"1\"> Dry run: show the plan, send no writes</label>\
             <label class=\"inline\"><input type=\"checkbox\" name=\"omit_unsupported\" value=\"1\"> Push without the attributes the target cannot hold</label>\
             <button type=\"submit\">Start push</button></form>\
             <p class=\"note\">The push runs in the background and resumes where it stopped if started again; afterwards every change is mirrored to the target until cut-over.</p>",
            csrf_field(c.csrf),
            esc(target.unwrap_or(""))
        );
    }
    o.push_str("</section>");

    // Verify, abort, cut over.
    if phase != Phase::CutOver {
        let diffs = state
            .differences
            .map(|d| format!("Last verification: {d} differences."))
            .unwrap_or_else(|| "Not verified yet.".into());
        let _ = write!(
            o,
            "<section class=\"card\"><h2>3. Verify</h2><p>{}</p>\
             <form method=\"post\" action=\"/admin/migration/verify\">{}<button type=\"submit\">Verify</button></form></section>",
            esc(&diffs),
            csrf_field(c.csrf)
        );
        let _ = write!(
            o,
            "<section class=\"card\"><h2>4. Cut over</h2>\
             <p><b>Irreversible.</b> Drains the mirror, verifies, then refuses every SCIM write for good, \
             naming the new service in the error. Type the target URL exactly to confirm.</p>\
             <form method=\"post\" action=\"/admin/migration/cutover\" class=\"grid\">{}\
             <label for=\"confirm\">Target URL{}</label><input id=\"confirm\" name=\"confirm\" autocomplete=\"off\" required>\
             <button type=\"submit\" class=\"danger\">Cut over</button></form></section>",
            csrf_field(c.csrf),
            target
                .map(|t| format!(" (<code>{}</code>)", esc(t)))
                .unwrap_or_default()
        );
        let _ = write!(
            o,
            "<section class=\"card\"><h2>Abort</h2><p>Stops mirroring and returns to \"not started\"; \
             this bridge stays the source of truth.</p>\
             <form method=\"post\" action=\"/admin/migration/abort\">{}<button type=\"submit\" class=\"danger\">Abort migration</button></form></section>",
            csrf_field(c.csrf)
        );
    }
    layout(c, &o)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn esc_neutralises_markup() {
        assert_eq!(
            esc("<script>alert('x')</script> & \"q\""),
            "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt; &amp; &quot;q&quot;"
        );
        assert_eq!(esc("plain"), "plain");
    }

    #[test]
    fn times_and_sizes_read_well() {
        assert_eq!(when("2024-05-01T12:34:56.789Z"), "2024-05-01 12:34:56 UTC");
        assert_eq!(when("2024-05-01T12:34:56Z"), "2024-05-01 12:34:56 UTC");
        assert_eq!(duration(Duration::from_secs(3 * 86_400 + 7200)), "3 d 2 h");
        assert_eq!(bytes(2 * 1_048_576), "2.0 MiB");
    }

    #[test]
    fn user_data_is_escaped_in_lists() {
        let c = Chrome {
            title: "Users",
            active: "users",
            csrf: "tok",
            flash: Some("<b>"),
        };
        let v = ListView {
            rt: ResourceType::User,
            query: "\"><script>".into(),
            rows: vec![ListRow {
                id: "1".into(),
                name: "<img src=x onerror=alert(1)>".into(),
                detail: "d".into(),
                email: Some("a&b@example.com".into()),
                active: Some(false),
                modified: "2024-05-01T00:00:00Z".into(),
            }],
            next_after: Some("a b".into()),
            is_first_page: false,
            total: 1,
        };
        let html = list(&c, &v);
        assert!(!html.contains("<img src=x"));
        assert!(!html.contains("\"><script>"));
        assert!(!html.contains("<b>"));
        assert!(html.contains("a&amp;b@example.com"));
        assert!(html.contains("after=a+b"));
        assert!(!html.contains("<script>"), "no inline script");
    }
}
