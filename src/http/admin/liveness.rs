//! The admin page's IdP liveness (issue 14 point 5): the per-token cells of the
//! Tokens page (last request, requests and errors in 24 h, warning badges, the
//! quiet-time alarm form), the dashboard's "needs attention" list (token warnings,
//! requests turned away for a token that is not valid or by the limiter, certificate
//! expiry) and the requests-per-hour chart with its per-token counts. One vocabulary
//! for outcomes everywhere (`OutcomeClass`): refused is a 4xx the client caused,
//! denied a 401/403, failed a 5xx of this server; "error" is any of them. The chart is inline SVG
//! drawn here (no script; colours come from classes in `style.css`, as the CSP
//! allows no inline style), with a title, a description and a title per hour for
//! screen readers. Like `pages.rs` it reads neither the store nor the clock: `now`
//! arrives in the view model.

use maud::{html, Markup};

use super::fragments::{csrf_field, when};
use crate::app::liveness::{
    TokenLiveness, TokenWarning, TurnedAway, TurnedAwaySummary, EXPIRY_WARNING_DAYS,
    SHARE_MIN_REQUESTS, STREAK, WINDOW_HOURS,
};
use crate::app::tokens::{quiet_after_text, TokenInfo, TokenState};
use crate::clock::Timestamp;
use crate::plural::count;
use crate::store::{hour_of, OutcomeClass, OutcomeCounts, Scope};

/// How long ago, in the admin's words: "just now", "5 minutes ago", "3 hours ago",
/// "2 days ago" (rounded down; a clock that went back reads "just now").
pub(crate) fn ago(then: Timestamp, now: Timestamp) -> String {
    let s = now.since(then).whole_seconds().max(0) as u64;
    match s {
        0..=59 => "just now".to_owned(),
        60..=3599 => format!("{} ago", count(s / 60, "minute", "minutes")),
        3600..=86_399 => format!("{} ago", count(s / 3600, "hour", "hours")),
        _ => format!("{} ago", count(s / 86_400, "day", "days")),
    }
}

/// A length of time in words, always rounded down so that a time left is never
/// overstated: under a minute "less than a minute", under an hour minutes ("30
/// minutes"), under two days hours ("47 hours", "25 hours": a whole-day count
/// would read 47 hours as "1 day", or rounded as "2 days"), else whole days.
pub(crate) fn span(d: time::Duration) -> String {
    let m = d.whole_minutes().max(0) as u64;
    match m {
        0 => "less than a minute".to_owned(),
        1..=59 => count(m, "minute", "minutes"),
        60..=2879 => count(m / 60, "hour", "hours"),
        _ => count(m / 1440, "day", "days"),
    }
}

/// The error classes of `c` that occurred, in the chart's words: "3 refused, 1 failed".
pub(crate) fn error_words(c: &OutcomeCounts) -> String {
    let parts: Vec<String> = OutcomeClass::ALL
        .into_iter()
        .filter(|k| k.is_error() && c.get(*k) > 0)
        .map(|k| format!("{} {}", c.get(k), k.as_str()))
        .collect();
    if parts.is_empty() {
        "no errors".to_owned()
    } else {
        parts.join(", ")
    }
}

/// Who holds a secret of a token, by its scope, in the words of the warnings: a
/// read-write token is pasted into an identity provider; a read-only one is only for
/// reading (`tokens::scope_use`), so its holders are the tools that read with it.
/// `None`: the scope is not known (no token has that name now).
struct Holder {
    /// The holders and their verb for a refused secret: "its identity provider gets".
    gets: &'static str,
    /// How a new secret reaches them.
    hand_over: &'static str,
    /// What to check when the token has gone quiet.
    running: &'static str,
    /// Who still sends a revoked secret, and what to do.
    still_sends: &'static str,
}

fn holder(scope: Option<Scope>) -> Holder {
    match scope {
        Some(Scope::ReadWrite) => Holder {
            gets: "its identity provider gets",
            hand_over: "paste the new secret into your identity provider",
            running: "provisioning is running in your identity provider",
            still_sends: "the identity provider still sends it; paste the current secret into it \
                          (or stop that provisioning)",
        },
        Some(Scope::ReadOnly) => Holder {
            gets: "the tools that read with it get",
            hand_over: "give the new secret to the tools that read with it",
            running: "the tools that read with it are still running",
            still_sends: "a tool that read with it still sends it; give it the current secret \
                          (or stop it)",
        },
        None => Holder {
            gets: "whatever uses it gets",
            hand_over:
                "give the new secret to whatever uses it (an identity provider, a reading tool)",
            running: "whatever uses it is still running",
            still_sends: "whatever used it still sends it; give it the current secret (or stop it)",
        },
    }
}

/// One warning as a sentence about the token `name` of `scope`.
pub(crate) fn sentence(name: &str, scope: Scope, w: &TokenWarning) -> String {
    let h = holder(Some(scope));
    match w {
        TokenWarning::Failing { streak, recent } => format!(
            "The token \"{name}\" is failing: its last {} got an error; in the last two hours {} \
             of {}: {}. See its last error on the Tokens page and the requests on the Activity page.",
            count(u64::from(*streak), "request", "requests"),
            recent.errors(),
            count(recent.total(), "request", "requests"),
            error_words(recent),
        ),
        TokenWarning::Quiet {
            silent,
            after_minutes,
        } => format!(
            "The token \"{name}\" has sent nothing for {} (its quiet-time alarm is {}): check \
             that {}.",
            span(*silent),
            quiet_after_text(*after_minutes),
            h.running,
        ),
        TokenWarning::Expiring { left } => format!(
            "The token \"{name}\" expires in {}: rotate it (Rotate on the Tokens page, or `scimbridge token \
             rotate {name}`), {}, then revoke the superseded one.",
            span(*left),
            h.hand_over,
        ),
        TokenWarning::Expired => format!(
            "The token \"{name}\" has expired: {} 401 (denied). Rotate it \
             (`scimbridge token rotate {name}`) and {}, or revoke it if it is no longer used.",
            h.gets, h.hand_over,
        ),
    }
}

/// The short badge of a warning on the Tokens page.
fn badge(w: &TokenWarning) -> Markup {
    let (class, text) = match w {
        TokenWarning::Failing { recent, .. } => {
            ("bad", format!("failing ({})", error_words(recent)))
        }
        TokenWarning::Quiet { silent, .. } => ("warn", format!("quiet for {}", span(*silent))),
        TokenWarning::Expiring { left } => ("warn", format!("expires in {}", span(*left))),
        TokenWarning::Expired => ("bad", "expired".to_owned()),
    };
    html! { span class={ "pill " (class) } data-warning=(w.kind()) { (text) } }
}

/// The Tokens page's "Last request" cell: relative, then the exact time.
pub(crate) fn last_request_cell(l: &TokenLiveness, now: Timestamp) -> Markup {
    html! {
        td.last-request {
            @match l.last_request {
                Some(t) => { (ago(t, now)) br; small.note { (when(t)) } }
                None => "never",
            }
        }
    }
}

/// The Tokens page's "Last 24 h" cell: counts, the last error, a small chart.
pub(crate) fn day_cell(t: &TokenInfo, l: &TokenLiveness, now: Timestamp) -> Markup {
    html! {
        td.traffic {
            @if t.state == TokenState::Revoked && l.day.total() == 0 {
                span.note { "—" }
            } @else {
                @if t.state == TokenState::Revoked { span.note { "Revoked; in 24 h: " } }
                span.requests { (count(l.day.total(), "request", "requests")) }
                ", "
                span class={ "errors" @if l.day.errors() > 0 { " bad" } } { (count(l.day.errors(), "error", "errors")) }
                @if l.day.errors() > 0 { " (" (error_words(&l.day)) ")" }
                @if let Some(e) = &l.traffic.last_error {
                    br;
                    small.reason { "Last error: " (e.status) " " (OutcomeClass::of(e.status).as_str()) ", " (ago(e.at, now)) @if let Some(r) = &e.reason { ": " (r) } }
                }
                @if l.day.total() > 0 {
                    br;
                    (chart(&l.hourly, now, &format!("Requests per hour of {}", t.name), &format!("chart-{}", t.id), ChartSize::Small))
                }
            }
        }
    }
}

/// The warning badges of a token (in its State cell).
pub(crate) fn badges(l: &TokenLiveness) -> Markup {
    html! { @for w in &l.warnings { " " (badge(w)) } }
}

/// The quiet-time alarm cell: the current setting and a form to change it.
pub(crate) fn quiet_cell(t: &TokenInfo, csrf: &str) -> Markup {
    let current = t.quiet_after_minutes.map(quiet_after_text);
    html! {
        td.quiet {
            @if t.state == TokenState::Active {
                form.quiet method="post" action="/admin/tokens/quiet" {
                    (csrf_field(csrf))
                    input type="hidden" name="id" value=(t.id);
                    input.short name="quiet_after" value=[current.as_deref()] placeholder="off"
                        size="5" maxlength="12" aria-label={ "Quiet-time alarm of " (t.name) " (e.g. 6h, 2d; empty: off)" };
                    button type="submit" aria-label={ "Save the quiet-time alarm of " (t.name) } { "Set" }
                }
            } @else {
                (current.as_deref().unwrap_or("off"))
            }
        }
    }
}

/// The rules behind the badges, under the Tokens table.
pub(crate) fn explained() -> Markup {
    html! {
        p.note #liveness-rules {
            "A request gets an " b { "error" } " when it is refused (4xx: the request was wrong, \
             conflicting or too many), denied (401, 403: the token is not valid or may not do this) or \
             failed (5xx: this server failed). A token is " b { "failing" } " when its last " (STREAK) " requests \
             all got an error, or more than half of at least " (SHARE_MIN_REQUESTS) " requests in the last two \
             hours did. The "
            b { "quiet alarm" } " (off unless set: Entra ID's incremental cycles and Okta send nothing when \
             nothing changed) warns on the dashboard when the token has sent nothing for that long: "
            code { "90m" } ", " code { "6h" } ", " code { "2d" } "; empty turns it off. Tokens that expire \
             within " (EXPIRY_WARNING_DAYS) " days are flagged. Counts are kept per clock hour for two days; \
             a revoked token keeps its counts, and requests still sent with a revoked or expired \
             secret count for its token as denied (401)."
        }
    }
}

/// One entry of the dashboard's "needs attention" list.
pub(crate) struct Attention {
    pub error: bool,
    pub text: String,
}

/// The certificate's expiry (`left` until `not_after`, which is as shown) as an
/// attention entry: expired is an error, within `EXPIRY_WARNING_DAYS` a warning.
pub(crate) fn cert_attention(left: time::Duration, not_after: &str) -> Option<Attention> {
    if left <= time::Duration::ZERO {
        Some(Attention {
            error: true,
            text: format!(
                "The server's certificate expired on {}: identity providers refuse to connect. \
                 Replace the certificate files (or check the ACME renewal below).",
                not_after
            ),
        })
    } else if left < time::Duration::days(EXPIRY_WARNING_DAYS) {
        Some(Attention {
            error: false,
            text: format!(
                "The server's certificate expires in {} ({}): renew it before identity providers \
                 refuse to connect.",
                span(left),
                not_after
            ),
        })
    } else {
        None
    }
}

/// Every token's warnings as attention entries, errors first: one entry per token
/// name and kind of warning. A name holds several secrets after a rotation; when
/// two of them expired the trial got two identical "has expired" lines. The entry
/// then says how many secrets and when the last one expired.
pub(crate) fn token_attention(tokens: &[(TokenInfo, TokenLiveness)]) -> Vec<Attention> {
    /// One name's warning of one kind: the first secret's, how many secrets have
    /// it, the latest expiry among them.
    struct Group<'a> {
        name: &'a str,
        scope: Scope,
        warning: &'a TokenWarning,
        secrets: u64,
        expired: Option<Timestamp>,
    }
    let mut groups: Vec<Group> = Vec::new();
    for (t, l) in tokens {
        for w in &l.warnings {
            let same = |g: &&mut Group| g.name == t.name && g.warning.kind() == w.kind();
            match groups.iter_mut().find(same) {
                Some(g) => {
                    g.secrets += 1;
                    g.expired = g.expired.max(t.expires);
                }
                None => groups.push(Group {
                    name: &t.name,
                    scope: t.scope,
                    warning: w,
                    secrets: 1,
                    expired: t.expires,
                }),
            }
        }
    }
    let mut out: Vec<Attention> = groups
        .into_iter()
        .map(|Group { name, scope, warning: w, secrets, expired }| Attention {
            error: w.is_error(),
            text: match w {
                TokenWarning::Expired if secrets > 1 => {
                    let h = holder(Some(scope));
                    format!(
                        "The token \"{name}\" has expired: its {secrets} secrets (a rotation leaves the \
                         old one under the name), the last at {}: {} 401 (denied). Rotate it \
                         (`scimbridge token rotate {name}`) and {}, or revoke it if it is no longer used.",
                        expired.map(when).unwrap_or_default(),
                        h.gets,
                        h.hand_over,
                    )
                }
                _ if secrets > 1 => format!("{} ({secrets} secrets under this name)", sentence(name, scope, w)),
                _ => sentence(name, scope, w),
            },
        })
        .collect();
    out.sort_by_key(|a| !a.error);
    out
}

/// Requests turned away in the last hour as attention entries: with a token that is
/// not valid (naming the revoked or expired token when its secret was recognised,
/// and who holds it by the scope `scope_of` gives for its name), and refused by the
/// limiter.
pub(crate) fn turned_away_attention(
    invalid: Option<&TurnedAwaySummary>,
    throttled: Option<&TurnedAwaySummary>,
    scope_of: impl Fn(&str) -> Option<Scope>,
) -> Vec<Attention> {
    let mut out = Vec::new();
    if let Some(s) = invalid {
        let what = match &s.last.why {
            TurnedAway::Revoked { name } => format!(
                "the revoked token \"{name}\": {}",
                holder(scope_of(name)).still_sends
            ),
            TurnedAway::Expired { name } => format!(
                "the expired token \"{name}\": rotate it (`scimbridge token rotate {name}`) and \
                 {}",
                holder(scope_of(name)).hand_over
            ),
            TurnedAway::DoubledScheme { token } => format!(
                "an Authorization header that says Bearer twice (\"Bearer Bearer <secret>\"{}): \
                 remove \"Bearer \" from the identity provider's token field",
                match token {
                    Some(name) => format!(", the secret of the token \"{name}\""),
                    None => String::new(),
                }
            ),
            TurnedAway::Unrecognised { why } => format!(
                "{why}: no token of this bridge has that secret (a typo, a token of another \
                 installation, or someone guessing)"
            ),
            TurnedAway::Throttled { .. } => "refused by the limiter".to_owned(),
        };
        out.push(Attention {
            error: true,
            text: format!(
                "{} in the last hour with a token that is not valid (answered 401, or 429 once the \
                 address was throttled). The last, from \
                 {} at {}, came with {what}.",
                count(s.requests, "request", "requests"),
                s.last.client,
                when(s.last.at),
            ),
        });
    }
    if let Some(s) = throttled {
        let who = match &s.last.why {
            TurnedAway::Throttled { token: Some(name) } => format!("the token \"{name}\""),
            _ => "an address failing to authenticate".to_owned(),
        };
        out.push(Attention {
            error: false,
            text: format!(
                "{} in the last hour refused by the limiter (429 Too Many Requests, with \
                 Retry-After). The last, from {} at {}, was for {who}. Identity providers retry; if \
                 it keeps happening, raise token_requests or token_heavy under [limits].",
                count(s.requests, "request was", "requests were"),
                s.last.client,
                when(s.last.at),
            ),
        });
    }
    out
}

/// The dashboard's "Needs attention" card; nothing when all is well.
pub(crate) fn attention(items: &[Attention]) -> Markup {
    html! {
        @if !items.is_empty() {
            section.card #attention {
                h2 { "Needs attention" }
                ul.attention {
                    @for a in items {
                        li class=(if a.error { "bad" } else { "warn" }) {
                            span class={ "pill " (if a.error { "bad" } else { "warn" }) } { (if a.error { "error" } else { "warning" }) }
                            " " (a.text)
                        }
                    }
                }
                p.note { "Token warnings are explained on the " a href="/admin/tokens" { "Tokens" } " page." }
            }
        }
    }
}

/// One token's requests in the chart's 24 hours, for the list under it.
pub(crate) struct TokenDay {
    pub name: String,
    pub revoked: bool,
    pub day: OutcomeCounts,
}

/// The per-token lines under the chart: every token that sent something in the
/// window, revoked ones marked (their past hours stay on the chart).
pub(crate) fn token_days(tokens: &[(TokenInfo, TokenLiveness)]) -> Vec<TokenDay> {
    tokens
        .iter()
        .filter(|(_, l)| l.day.total() > 0)
        .map(|(t, l)| TokenDay {
            name: t.name.clone(),
            revoked: t.state == TokenState::Revoked,
            day: l.day,
        })
        .collect()
}

/// The dashboard's traffic card: the chart of every token together, a legend, and
/// each token's share.
pub(crate) fn traffic_card(
    hourly: &[OutcomeCounts],
    by_token: &[TokenDay],
    unrecognised: &OutcomeCounts,
    now: Timestamp,
) -> Markup {
    let mut day = OutcomeCounts::default();
    for h in hourly {
        day.merge(h);
    }
    let from_tokens = day.total().saturating_sub(unrecognised.total());
    html! {
        section.card #traffic {
            h2 { "SCIM requests per hour (last 24 h)" }
            p #traffic-summary {
                @if unrecognised.total() == 0 {
                    (count(day.total(), "request", "requests")) " from every token, "
                } @else {
                    (count(day.total(), "request", "requests")) ": "
                    (from_tokens) " with a token of this bridge, "
                    (unrecognised.total()) " with no recognised token; "
                }
                (count(day.errors(), "error", "errors"))
                @if day.errors() > 0 { " (" (error_words(&day)) ")" }
                "."
            }
            (chart(hourly, now, "SCIM requests per hour by outcome, last 24 hours", "chart-all", ChartSize::Large))
            (legend())
            @if !by_token.is_empty() || unrecognised.total() > 0 {
                ul.by-token #traffic-by-token {
                    @for t in by_token {
                        li data-token=(t.name) {
                            b { (t.name) } @if t.revoked { " " span.pill.warn { "revoked" } }
                            ": " (count(t.day.total(), "request", "requests"))
                            @if t.day.errors() > 0 { " (" (error_words(&t.day)) ")" }
                        }
                    }
                    @if unrecognised.total() > 0 {
                        li #traffic-unrecognised {
                            i { "no recognised token" } " (unknown, missing or malformed): "
                            (count(unrecognised.total(), "request", "requests"))
                            " (" (error_words(unrecognised)) ")"
                        }
                    }
                }
            }
            (chart_note(hourly, now))
        }
    }
}

/// What the dashboard's chart plots, exactly (trial 7 item 21: its note spoke of
/// refusals and left the bars, their unit and their window unsaid): the window by
/// its first and last clock hour, the unit and scale, the segments, what is counted
/// where and what is not counted.
fn chart_note(hourly: &[OutcomeCounts], now: Timestamp) -> Markup {
    let end = hour_of(now);
    let first = end - WINDOW_HOURS + 1;
    let busiest = hourly.iter().map(OutcomeCounts::total).max().unwrap_or(0);
    let day = |hour: i64| {
        Timestamp::from_unix_ms(hour * 3_600_000)
            .map(|t| t.datetime().date().to_string())
            .unwrap_or_default()
    };
    html! {
        p.note #traffic-note {
            "Each bar is one clock hour (UTC): " (WINDOW_HOURS) " bars, from "
            (clock_hour(first)) "–" (clock_hour(first + 1)) " on " (day(first)) " to "
            (clock_hour(end)) "–" (clock_hour(end + 1)) " on " (day(end))
            ", the current hour, still filling. Its height is the number of SCIM requests \
             (below /scim/v2) answered in that hour, on a linear scale from 0 to "
            (count(busiest, "request", "requests")) " (the busiest hour, the number at the top). \
             Its segments, bottom up: ok (1xx–3xx), refused (4xx but 401 and 403; the limiter's \
             429 too), denied (401, 403) and failed (5xx), each at least one unit high so that a \
             single error shows; point at a bar for its exact counts. Every request counts once: \
             for its token (a revoked or expired secret's 401s too, under the token's name), or \
             as no recognised token (an unknown, missing or malformed one, and 429s once an \
             address is throttled for failing to authenticate). /healthz, /readyz, /metrics and \
             this admin page are not counted. \"Needs attention\" counts the 401s and 429s of \
             the last hour."
        }
    }
}

fn legend() -> Markup {
    html! {
        ul.legend {
            @for c in OutcomeClass::ALL {
                li { span class={ "swatch " (c.as_str()) } {} " " (class_words(c)) }
            }
        }
    }
}

fn class_words(c: OutcomeClass) -> &'static str {
    match c {
        OutcomeClass::Ok => "ok (1xx–3xx)",
        OutcomeClass::Refused => "refused (4xx but 401, 403)",
        OutcomeClass::Denied => "denied (401, 403)",
        OutcomeClass::Failed => "failed (5xx)",
    }
}

#[derive(Clone, Copy)]
pub(crate) enum ChartSize {
    /// In a table cell: bars only.
    Small,
    /// The dashboard's: axis labels every six hours and the scale.
    Large,
}

/// A stacked bar chart of `hourly` (the `WINDOW_HOURS` clock hours ending with the
/// one holding `now`, oldest first) as inline SVG: one bar per hour, one segment per
/// outcome class, each hour with a `<title>` naming its counts. Inline in HTML the
/// parser puts `svg` in the SVG namespace, so no `xmlns` (the page names no other
/// origin); the markup is well-formed XML all the same.
pub(crate) fn chart(
    hourly: &[OutcomeCounts],
    now: Timestamp,
    title: &str,
    id: &str,
    size: ChartSize,
) -> Markup {
    let (width, height, top, bottom, left) = match size {
        ChartSize::Small => (144.0, 28.0, 1.0, 1.0, 0.0),
        ChartSize::Large => (600.0, 180.0, 14.0, 20.0, 34.0),
    };
    let plot_h: f64 = height - top - bottom;
    let slot = (width - left) / WINDOW_HOURS as f64;
    let max = hourly
        .iter()
        .map(OutcomeCounts::total)
        .max()
        .unwrap_or(0)
        .max(1);
    let end = hour_of(now);
    let first = end - WINDOW_HOURS + 1;
    let total: u64 = hourly.iter().map(OutcomeCounts::total).sum();
    let desc = format!(
        "{} in the last 24 hours, at most {} in one hour; hours in UTC.",
        count(total, "request", "requests"),
        max
    );
    let (title_id, desc_id) = (format!("{id}-title"), format!("{id}-desc"));
    let labelled = format!("{title_id} {desc_id}");
    html! {
        svg.chart id=(id) role="img"
            viewBox={ "0 0 " (width) " " (height) } width=(width) height=(height)
            aria-labelledby=(labelled) {
            title id=(title_id) { (title) }
            desc id=(desc_id) { (desc) }
            @if let ChartSize::Large = size {
                line.axis x1=(left) y1=(top + plot_h) x2=(width) y2=(top + plot_h) {}
                text.scale x=(left - 4.0) y=(top + 4.0) text-anchor="end" { (max) }
                text.scale x=(left - 4.0) y=(top + plot_h) text-anchor="end" { "0" }
            }
            @for (i, h) in hourly.iter().enumerate() {
                @let hour = first + i as i64;
                @let x = left + i as f64 * slot;
                g.hour {
                    title { (hour_title(hour, h)) }
                    @for (c, y, bar) in stack(h, max, top + plot_h, plot_h) {
                        rect class={ "bar " (c.as_str()) } x=(fmt(x + slot * 0.1)) y=(fmt(y))
                            width=(fmt(slot * 0.8)) height=(fmt(bar)) {}
                    }
                }
                @if let ChartSize::Large = size {
                    @if (hour - first) % 6 == 0 {
                        text.hour-label x=(fmt(x)) y=(height - 5.0) { (clock_hour(hour)) }
                    }
                }
            }
        }
    }
}

/// The segments of one bar, bottom up: (class, top edge, height), each class with
/// requests at least one unit high so that a single failure stays visible.
fn stack(h: &OutcomeCounts, max: u64, base: f64, plot_h: f64) -> Vec<(OutcomeClass, f64, f64)> {
    let mut y = base;
    let mut out = Vec::new();
    for c in OutcomeClass::ALL {
        let n = h.get(c);
        if n > 0 {
            let bar = (n as f64 / max as f64 * plot_h).max(1.0);
            y -= bar;
            out.push((c, y, bar));
        }
    }
    out
}

/// `HH:00` (UTC) of an hour counted from the epoch.
fn clock_hour(hour: i64) -> String {
    format!("{:02}:00", hour.rem_euclid(24))
}

fn hour_title(hour: i64, h: &OutcomeCounts) -> String {
    let mut parts: Vec<String> = OutcomeClass::ALL
        .iter()
        .filter(|c| h.get(**c) > 0)
        .map(|c| format!("{} {}", h.get(*c), c.as_str()))
        .collect();
    if parts.is_empty() {
        parts.push("no requests".to_owned());
    }
    format!(
        "{}–{} UTC: {}",
        clock_hour(hour),
        clock_hour(hour + 1),
        parts.join(", ")
    )
}

/// A coordinate with at most one decimal.
fn fmt(v: f64) -> String {
    let r = (v * 10.0).round() / 10.0;
    if r.fract() == 0.0 {
        format!("{}", r as i64)
    } else {
        format!("{r:.1}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> Timestamp {
        Timestamp::parse(s).unwrap()
    }

    #[test]
    fn times_read_in_words() {
        let now = at("2024-05-03T10:00:00Z");
        assert_eq!(ago(at("2024-05-03T09:59:30Z"), now), "just now");
        assert_eq!(ago(at("2024-05-03T09:59:00Z"), now), "1 minute ago");
        assert_eq!(ago(at("2024-05-03T07:00:00Z"), now), "3 hours ago");
        assert_eq!(ago(at("2024-05-01T10:00:00Z"), now), "2 days ago");
        assert_eq!(ago(at("2024-05-04T10:00:00Z"), now), "just now");
        // Rounded down, never overstating a time left (the trial's question).
        let h = time::Duration::hours;
        assert_eq!(span(h(47)), "47 hours");
        assert_eq!(span(h(25)), "25 hours");
        assert_eq!(span(h(48)), "2 days");
        assert_eq!(span(h(71)), "2 days");
        assert_eq!(span(time::Duration::minutes(30)), "30 minutes");
        assert_eq!(span(time::Duration::minutes(61)), "1 hour");
        assert_eq!(span(time::Duration::seconds(59)), "less than a minute");
        assert_eq!(span(time::Duration::seconds(-5)), "less than a minute");
        assert_eq!(fmt(2.25), "2.3");
        assert_eq!(fmt(4.0), "4");
    }

    /// A read-only token is never in an identity provider (`tokens::scope_use`): its
    /// warnings name the tools that read with it; a read-write token's name the
    /// identity provider.
    #[test]
    fn warnings_name_who_holds_the_token_by_its_scope() {
        let quiet = TokenWarning::Quiet {
            silent: time::Duration::hours(3),
            after_minutes: 120,
        };
        let expiring = TokenWarning::Expiring {
            left: time::Duration::hours(5),
        };
        for w in [&quiet, &expiring, &TokenWarning::Expired] {
            let ro = sentence("reports", Scope::ReadOnly, w);
            assert!(!ro.contains("identity provider"), "{ro}");
            assert!(ro.contains("the tools that read with it"), "{ro}");
            let rw = sentence("entra", Scope::ReadWrite, w);
            assert!(rw.contains("identity provider"), "{rw}");
        }
        let last = |why: TurnedAway| TurnedAwaySummary {
            requests: 1,
            last: crate::app::liveness::LastTurnedAway {
                at: at("2024-05-03T10:00:00Z"),
                client: std::net::IpAddr::from([192, 0, 2, 1]),
                why,
            },
        };
        let said = |why: TurnedAway, scope: Option<Scope>| {
            turned_away_attention(Some(&last(why)), None, |_| scope)[0]
                .text
                .clone()
        };
        let revoked = || TurnedAway::Revoked { name: "r".into() };
        let expired = || TurnedAway::Expired { name: "r".into() };
        for text in [
            said(revoked(), Some(Scope::ReadOnly)),
            said(expired(), Some(Scope::ReadOnly)),
        ] {
            assert!(!text.contains("identity provider"), "{text}");
        }
        assert!(said(revoked(), Some(Scope::ReadWrite))
            .contains("the identity provider still sends it"));
        assert!(said(expired(), Some(Scope::ReadWrite)).contains("into your identity provider"));
        // A name no token has now: neither is assumed.
        let unknown = said(revoked(), None);
        assert!(unknown.contains("whatever used it"), "{unknown}");
    }

    #[test]
    fn the_chart_stacks_classes_per_hour_and_labels_hours() {
        let now = at("2024-05-03T10:20:00Z");
        let mut hourly = vec![OutcomeCounts::default(); 24];
        hourly[23] = OutcomeCounts([3, 1, 0, 0]);
        hourly[0] = OutcomeCounts([0, 0, 0, 2]);
        let svg = chart(&hourly, now, "T", "c", ChartSize::Large).into_string();
        assert_eq!(svg.matches("<rect").count(), 3, "{svg}");
        assert!(
            svg.contains("<title>10:00–11:00 UTC: 3 ok, 1 refused</title>"),
            "{svg}"
        );
        assert!(
            svg.contains("<title>11:00–12:00 UTC: 2 failed</title>"),
            "{svg}"
        );
        assert!(
            svg.contains(">11:00</text>") && svg.contains(">17:00</text>"),
            "{svg}"
        );
        assert!(svg.contains("6 requests in the last 24 hours, at most 4 in one hour"));
        assert!(!svg.contains("<script") && !svg.contains("style="));
    }

    #[test]
    fn the_chart_note_names_its_window_unit_and_scale() {
        let mut hourly = vec![OutcomeCounts::default(); 24];
        hourly[23] = OutcomeCounts([3, 1, 0, 0]);
        hourly[0] = OutcomeCounts([0, 0, 0, 2]);
        let note = chart_note(&hourly, at("2024-05-03T10:20:00Z")).into_string();
        assert!(
            note.contains(
                "Each bar is one clock hour (UTC): 24 bars, from 11:00–12:00 on 2024-05-02 to \
                 10:00–11:00 on 2024-05-03, the current hour, still filling. Its height is the \
                 number of SCIM requests (below /scim/v2) answered in that hour, on a linear \
                 scale from 0 to 4 requests (the busiest hour"
            ),
            "{note}"
        );
        assert!(note.contains("refused (4xx but 401 and 403"), "{note}");
        // Late in the day the window starts the same day; an empty chart's scale is 0.
        let late =
            chart_note(&[OutcomeCounts::default(); 24], at("2024-05-03T23:59:00Z")).into_string();
        assert!(
            late.contains("from 00:00–01:00 on 2024-05-03 to 23:00–00:00 on 2024-05-03")
                && late.contains("from 0 to 0 requests"),
            "{late}"
        );
    }
}
