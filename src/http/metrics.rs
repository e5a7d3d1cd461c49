//! Prometheus metrics: requests by route, method and status, a latency histogram by
//! route, authentication failures by reason, limiter refusals by limit, connections
//! closed by the server by reason; directory counts, database size and certificate
//! expiry are read at scrape time. Text exposition format 0.0.4.
//!
//! Every label value comes from a closed set chosen here (routes with ids stripped,
//! known methods or "other", reasons that are enums), never from request text: an
//! unauthenticated client must not be able to grow the label sets.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::time::Duration;

/// Upper bounds (seconds) of the latency histogram buckets.
const BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
];

#[derive(Default)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    sum: f64,
    count: u64,
}

#[derive(Default)]
pub(crate) struct Metrics {
    requests: Mutex<BTreeMap<(&'static str, &'static str, u16), u64>>,
    latency: Mutex<BTreeMap<&'static str, Histogram>>,
    auth_failures: Mutex<BTreeMap<&'static str, u64>>,
    connections: Mutex<BTreeMap<&'static str, u64>>,
}

/// The method label: the methods RFC 9110 and RFC 5789 define, else "other".
pub(crate) fn method_label(m: &hyper::Method) -> &'static str {
    use hyper::Method as M;
    match *m {
        M::GET => "GET",
        M::HEAD => "HEAD",
        M::POST => "POST",
        M::PUT => "PUT",
        M::PATCH => "PATCH",
        M::DELETE => "DELETE",
        M::OPTIONS => "OPTIONS",
        M::CONNECT => "CONNECT",
        M::TRACE => "TRACE",
        _ => "other",
    }
}

/// A status label: real status codes only (hyper's type admits 100–999).
fn status_label(status: u16) -> u16 {
    if (100..600).contains(&status) {
        status
    } else {
        0
    }
}

/// A route label with ids stripped, so label cardinality stays bounded.
pub(crate) fn route_label(path: &str) -> &'static str {
    let Some(rest) = path.strip_prefix("/scim/v2") else {
        return match path {
            "/healthz" => "/healthz",
            "/readyz" => "/readyz",
            "/metrics" => "/metrics",
            p if p == "/admin" || p.starts_with("/admin/") => "/admin",
            _ => "other",
        };
    };
    let segs: Vec<&str> = rest.split('/').filter(|s| !s.is_empty()).collect();
    match segs.as_slice() {
        ["Users"] => "/scim/v2/Users",
        ["Users", ".search"] => "/scim/v2/Users/.search",
        ["Users", _] => "/scim/v2/Users/{id}",
        ["Groups"] => "/scim/v2/Groups",
        ["Groups", ".search"] => "/scim/v2/Groups/.search",
        ["Groups", _] => "/scim/v2/Groups/{id}",
        [".search"] => "/scim/v2/.search",
        ["Bulk"] => "/scim/v2/Bulk",
        ["ServiceProviderConfig"] => "/scim/v2/ServiceProviderConfig",
        ["Schemas", ..] => "/scim/v2/Schemas",
        ["ResourceTypes", ..] => "/scim/v2/ResourceTypes",
        _ => "/scim/v2/other",
    }
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

impl Metrics {
    pub(crate) fn record(
        &self,
        route: &'static str,
        method: &hyper::Method,
        status: u16,
        elapsed: Duration,
    ) {
        if let Ok(mut m) = self.requests.lock() {
            *m.entry((route, method_label(method), status_label(status)))
                .or_default() += 1;
        }
        if let Ok(mut h) = self.latency.lock() {
            let h = h.entry(route).or_default();
            let secs = elapsed.as_secs_f64();
            for (i, b) in BUCKETS.iter().enumerate() {
                if secs <= *b {
                    h.counts[i] += 1;
                }
            }
            h.sum += secs;
            h.count += 1;
        }
    }

    pub(crate) fn auth_failure(&self, reason: &'static str) {
        if let Ok(mut m) = self.auth_failures.lock() {
            *m.entry(reason).or_default() += 1;
        }
    }

    /// A connection closed by a deadline.
    pub(crate) fn connection_closed(&self, why: crate::http::conn::Verdict) {
        self.connection_event(why.as_str());
    }

    /// A connection refused at accept (`reason` is a fixed word).
    pub(crate) fn connection_refused(&self, reason: &'static str) {
        self.connection_event(reason);
    }

    fn connection_event(&self, reason: &'static str) {
        if let Ok(mut m) = self.connections.lock() {
            *m.entry(reason).or_default() += 1;
        }
    }

    /// The exposition text; `gauges` are (name, help, value) read at scrape time,
    /// `refusals` the limiter's counts.
    pub(crate) fn render(
        &self,
        gauges: &[(&str, &str, f64)],
        refusals: impl Iterator<Item = (crate::limiter::Reason, u64)>,
    ) -> String {
        let mut out = String::new();
        out.push_str(
            "# HELP scimbridge_http_requests_total HTTP requests by route, method and status.\n",
        );
        out.push_str("# TYPE scimbridge_http_requests_total counter\n");
        if let Ok(m) = self.requests.lock() {
            for ((route, method, status), n) in m.iter() {
                let _ = writeln!(
                    out,
                    "scimbridge_http_requests_total{{route=\"{}\",method=\"{}\",status=\"{status}\"}} {n}",
                    escape(route),
                    escape(method)
                );
            }
        }
        out.push_str(
            "# HELP scimbridge_http_request_duration_seconds Time to answer a request, by route.\n",
        );
        out.push_str("# TYPE scimbridge_http_request_duration_seconds histogram\n");
        if let Ok(h) = self.latency.lock() {
            for (route, hist) in h.iter() {
                let route = escape(route);
                for (i, b) in BUCKETS.iter().enumerate() {
                    let _ = writeln!(
                        out,
                        "scimbridge_http_request_duration_seconds_bucket{{route=\"{route}\",le=\"{b}\"}} {}",
                        hist.counts[i]
                    );
                }
                let _ = writeln!(
                    out,
                    "scimbridge_http_request_duration_seconds_bucket{{route=\"{route}\",le=\"+Inf\"}} {}",
                    hist.count
                );
                let _ = writeln!(
                    out,
                    "scimbridge_http_request_duration_seconds_sum{{route=\"{route}\"}} {}",
                    hist.sum
                );
                let _ = writeln!(
                    out,
                    "scimbridge_http_request_duration_seconds_count{{route=\"{route}\"}} {}",
                    hist.count
                );
            }
        }
        out.push_str(
            "# HELP scimbridge_auth_failures_total Rejected SCIM authentications by reason.\n",
        );
        out.push_str("# TYPE scimbridge_auth_failures_total counter\n");
        if let Ok(m) = self.auth_failures.lock() {
            for (reason, n) in m.iter() {
                let _ = writeln!(
                    out,
                    "scimbridge_auth_failures_total{{reason=\"{}\"}} {n}",
                    escape(reason)
                );
            }
        }
        out.push_str(
            "# HELP scimbridge_throttled_total Requests answered 429 by the limiter, by limit.\n",
        );
        out.push_str("# TYPE scimbridge_throttled_total counter\n");
        for (reason, n) in refusals {
            let _ = writeln!(
                out,
                "scimbridge_throttled_total{{limit=\"{}\"}} {n}",
                reason.as_str()
            );
        }
        out.push_str(
            "# HELP scimbridge_connections_closed_total Connections the server closed or refused, by reason.\n",
        );
        out.push_str("# TYPE scimbridge_connections_closed_total counter\n");
        if let Ok(m) = self.connections.lock() {
            for (reason, n) in m.iter() {
                let _ = writeln!(
                    out,
                    "scimbridge_connections_closed_total{{reason=\"{reason}\"}} {n}"
                );
            }
        }
        for (name, help, value) in gauges {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}"
            );
        }
        out
    }
}

/// The per-token series (issue 14 point 5), one set per token that is not revoked:
/// requests by outcome class since the token's first request (a counter kept
/// across restarts), the time of its last request, and each liveness warning as 0
/// or 1. Token names are chosen by the admin, not by a request, and a token's
/// series disappear when it is revoked, so the label set is bounded by the issued
/// tokens. `token_id` tells apart two unrevoked tokens that share a name.
pub(crate) fn render_tokens(
    tokens: &[(
        crate::app::tokens::TokenInfo,
        crate::app::liveness::TokenLiveness,
    )],
    out: &mut String,
) {
    use crate::app::liveness::TokenWarning;
    use crate::app::tokens::TokenState;
    use crate::store::OutcomeClass;
    let live: Vec<_> = tokens
        .iter()
        .filter(|(t, _)| t.state != TokenState::Revoked)
        .map(|(t, l)| {
            let labels = format!(
                "token=\"{}\",token_id=\"{}\"",
                escape(&t.name),
                escape(&t.id)
            );
            (labels, l)
        })
        .collect();
    out.push_str(
        "# HELP scimbridge_token_requests_total SCIM requests of each unrevoked token by outcome (ok: 1xx-3xx, refused: 4xx but 401/403, denied: 401/403, failed: 5xx).\n\
         # TYPE scimbridge_token_requests_total counter\n",
    );
    for (labels, l) in &live {
        for c in OutcomeClass::ALL {
            let _ = writeln!(
                out,
                "scimbridge_token_requests_total{{{labels},outcome=\"{}\"}} {}",
                c.as_str(),
                l.traffic.totals.get(c)
            );
        }
    }
    out.push_str(
        "# HELP scimbridge_token_last_request_timestamp_seconds Unix time of each unrevoked token's last SCIM request.\n\
         # TYPE scimbridge_token_last_request_timestamp_seconds gauge\n",
    );
    for (labels, l) in &live {
        if let Some(t) = l.last_request {
            let _ = writeln!(
                out,
                "scimbridge_token_last_request_timestamp_seconds{{{labels}}} {}",
                t.unix_seconds()
            );
        }
    }
    out.push_str(
        "# HELP scimbridge_token_warning 1 while the token's liveness warning of this kind holds (failing, quiet, expiring, expired), else 0.\n\
         # TYPE scimbridge_token_warning gauge\n",
    );
    for (labels, l) in &live {
        for kind in TokenWarning::KINDS {
            let on = l.warnings.iter().any(|w| w.kind() == kind);
            let _ = writeln!(
                out,
                "scimbridge_token_warning{{{labels},kind=\"{kind}\"}} {}",
                u8::from(on)
            );
        }
    }
}

/// The served certificate's gauges, appended to the exposition: expiry, warnings by
/// kind and, in ACME mode, the next renewal and the last error by kind. Every label
/// value comes from a closed set (`WarningKind::ALL`, `AcmeErrorKind::ALL` and
/// `none`), so a scrape always shows the same series.
pub(crate) fn render_tls(view: &crate::tls::CertView, out: &mut String) {
    use crate::tls::acme::AcmeErrorKind;
    use crate::tls::WarningKind;
    if let Some(info) = &view.info {
        let _ = writeln!(
            out,
            "# HELP scimbridge_tls_certificate_expiry_timestamp_seconds Unix time at which the served certificate expires.\n\
             # TYPE scimbridge_tls_certificate_expiry_timestamp_seconds gauge\n\
             scimbridge_tls_certificate_expiry_timestamp_seconds {}",
            info.not_after.unix_seconds()
        );
    }
    out.push_str(
        "# HELP scimbridge_tls_certificate_warning 1 when the served certificate has this fault, by kind.\n\
         # TYPE scimbridge_tls_certificate_warning gauge\n",
    );
    for kind in WarningKind::ALL {
        let on = view.warnings.iter().any(|w| w.kind() == kind);
        let _ = writeln!(
            out,
            "scimbridge_tls_certificate_warning{{kind=\"{}\"}} {}",
            kind.as_str(),
            u8::from(on)
        );
    }
    let Some(acme) = &view.acme else {
        return;
    };
    if let Some(next) = acme.next_renewal {
        let _ = writeln!(
            out,
            "# HELP scimbridge_acme_next_renewal_timestamp_seconds Unix time of the next ACME order (renewal or retry).\n\
             # TYPE scimbridge_acme_next_renewal_timestamp_seconds gauge\n\
             scimbridge_acme_next_renewal_timestamp_seconds {}",
            next.unix_seconds()
        );
    }
    out.push_str(
        "# HELP scimbridge_acme_last_error 1 for the kind of the last ACME failure (none after a success).\n\
         # TYPE scimbridge_acme_last_error gauge\n",
    );
    let last = acme.last_error.as_ref().map(|e| e.kind);
    let _ = writeln!(
        out,
        "scimbridge_acme_last_error{{kind=\"none\"}} {}",
        u8::from(last.is_none())
    );
    for kind in AcmeErrorKind::ALL {
        let _ = writeln!(
            out,
            "scimbridge_acme_last_error{{kind=\"{}\"}} {}",
            kind.as_str(),
            u8::from(last == Some(kind))
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_strip_ids() {
        assert_eq!(route_label("/scim/v2/Users/abc"), "/scim/v2/Users/{id}");
        assert_eq!(route_label("/scim/v2/Groups"), "/scim/v2/Groups");
        assert_eq!(route_label("/scim/v2/Schemas/urn:x"), "/scim/v2/Schemas");
        assert_eq!(route_label("/random/thing"), "other");
    }

    #[test]
    fn renders_counters_and_histograms() {
        let m = Metrics::default();
        m.record(
            "/scim/v2/Users",
            &hyper::Method::GET,
            200,
            Duration::from_millis(3),
        );
        m.record(
            "/scim/v2/Users",
            &hyper::Method::GET,
            200,
            Duration::from_millis(30),
        );
        m.auth_failure("unknown token");
        let text = m.render(&[("scimbridge_users", "Users.", 5.0)], std::iter::empty());
        assert!(text.contains("scimbridge_http_requests_total{route=\"/scim/v2/Users\",method=\"GET\",status=\"200\"} 2"));
        assert!(text.contains("scimbridge_http_request_duration_seconds_bucket{route=\"/scim/v2/Users\",le=\"0.005\"} 1"));
        assert!(text.contains(
            "scimbridge_http_request_duration_seconds_count{route=\"/scim/v2/Users\"} 2"
        ));
        assert!(text.contains("scimbridge_auth_failures_total{reason=\"unknown token\"} 1"));
        assert!(text.contains("scimbridge_users 5"));
    }

    #[test]
    fn unknown_methods_share_one_label() {
        let m = Metrics::default();
        for i in 0..1000 {
            let method = hyper::Method::from_bytes(format!("X{i}").as_bytes()).unwrap();
            m.record("other", &method, 405, Duration::from_millis(1));
        }
        let text = m.render(&[], std::iter::empty());
        assert!(
            text.contains("method=\"other\",status=\"405\"} 1000"),
            "{text}"
        );
        assert_eq!(m.requests.lock().unwrap().len(), 1);
    }
}
