//! IdP liveness (issue 14 point 5): is each identity provider still talking to the
//! bridge, and is it succeeding? Counts every answered SCIM request of an
//! authenticated token by outcome class into hourly buckets, in memory (no write
//! per request), handed to the store by the token-use flusher every 30 s and loaded
//! back at start, so a restart does not zero them. Decides the per-token warnings:
//! failing requests, the quiet-time alarm, expiry. Memory and metric series are
//! bounded by the issued tokens: only authenticated tokens, and the refused requests
//! of a revoked or expired token's secret (the ones an admin must hear about), are
//! counted per token. A revoked token keeps its past hours, so the dashboard's chart
//! still shows the traffic that happened (`/metrics` drops its series). A request
//! whose secret no token has (or with no token at all) counts in one row of its
//! own, stored and loaded like a token's, so that the dashboard's chart holds every
//! request the turned-away list counts, across a restart too.
//!
//! Also keeps the requests turned away before any token could be counted (`TurnedAway`):
//! a token that is not valid (401) and the limiter's refusals (429), per minute over
//! the last hour with the last one's client, time and token, for the dashboard.
//!
//! Knows neither HTTP (it is given a status code and a reason) nor redb.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::Mutex;

use time::Duration;

use super::tokens::{TokenInfo, TokenState};
use crate::clock::Timestamp;
use crate::store::{hour_of, OutcomeCounts, Store, TokenTraffic};

/// A token is *failing* when its last `STREAK` requests all failed …
pub(crate) const STREAK: u32 = 5;
/// … or, over the current and the previous clock hour, it sent at least
/// `SHARE_MIN_REQUESTS` requests and more than half of them failed.
pub(crate) const SHARE_MIN_REQUESTS: u64 = 20;
/// Tokens (and the certificate) that expire within this many days are warned about.
pub(crate) const EXPIRY_WARNING_DAYS: i64 = 14;
/// The window of "requests in 24 h" and of the chart, in clock hours.
pub(crate) const WINDOW_HOURS: i64 = 24;

/// One token's counts in memory; `dirty` until the flusher has stored them.
struct Tracked {
    traffic: TokenTraffic,
    dirty: bool,
}

/// Every counted token's traffic (token id → counts), and the requests turned away.
pub(crate) struct Liveness {
    tokens: Mutex<HashMap<String, Tracked>>,
    /// Requests whose secret no token has, or without a token (401, or 429 once the
    /// address is throttled): the chart's "no recognised token" row, stored like a
    /// token's (the turned-away list below is not: it covers the last hour only).
    unrecognised: Mutex<Tracked>,
    /// Requests with a token that is not valid (401, or 429 once the address is
    /// throttled for failing).
    invalid: Mutex<TurnedAwayLog>,
    /// Requests the limiter refused (429), with a valid token or without one.
    throttled: Mutex<TurnedAwayLog>,
}

/// How long the dashboard looks back for turned-away requests, in minutes.
pub(crate) const TURNED_AWAY_MINUTES: i64 = 60;

/// Why a request was turned away before it reached the directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum TurnedAway {
    /// 401: no token, a malformed header, or a secret no token has (`why` says which).
    Unrecognised { why: &'static str },
    /// 401: a secret of the token `name`, revoked.
    Revoked { name: String },
    /// 401: a secret of the token `name`, expired.
    Expired { name: String },
    /// 401: `Authorization: Bearer Bearer <secret>`; `token` names the token whose
    /// secret followed, when one has it.
    DoubledScheme { token: Option<String> },
    /// 429 from the limiter: too much work in progress for the token `token` (when
    /// the request had a valid one), or too many failed authentications from the
    /// address.
    Throttled { token: Option<String> },
}

/// The last request turned away, as the dashboard names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LastTurnedAway {
    pub at: Timestamp,
    pub client: IpAddr,
    pub why: TurnedAway,
}

/// Requests turned away in the last `TURNED_AWAY_MINUTES`, and the last of them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TurnedAwaySummary {
    pub requests: u64,
    pub last: LastTurnedAway,
}

/// Per-minute counts (minute since the epoch, count), oldest first, at most
/// `TURNED_AWAY_MINUTES` of them: memory stays fixed however many arrive.
#[derive(Default)]
struct TurnedAwayLog {
    minutes: VecDeque<(i64, u64)>,
    last: Option<LastTurnedAway>,
}

impl TurnedAwayLog {
    fn note(&mut self, why: TurnedAway, client: IpAddr, now: Timestamp) {
        let minute = now.unix_seconds().div_euclid(60);
        match self.minutes.back_mut() {
            // A clock stepped back counts into the latest minute.
            Some((m, n)) if *m >= minute => *n = n.saturating_add(1),
            _ => self.minutes.push_back((minute, 1)),
        }
        while self
            .minutes
            .front()
            .is_some_and(|(m, _)| *m <= minute - TURNED_AWAY_MINUTES)
        {
            self.minutes.pop_front();
        }
        self.last = Some(LastTurnedAway {
            at: now,
            client,
            why,
        });
    }

    fn summary(&self, now: Timestamp) -> Option<TurnedAwaySummary> {
        let minute = now.unix_seconds().div_euclid(60);
        let requests = self
            .minutes
            .iter()
            .filter(|(m, _)| *m > minute - TURNED_AWAY_MINUTES)
            .map(|(_, n)| *n)
            .sum();
        let last = self.last.clone()?;
        (requests > 0).then_some(TurnedAwaySummary { requests, last })
    }
}

impl Liveness {
    /// Starts from what the store kept (empty when it cannot be read: counting
    /// goes on, and the reason is logged).
    pub(crate) fn load(store: &Store) -> Liveness {
        let stored = store
            .snapshot()
            .and_then(|s| Ok((s.token_traffic()?, s.unrecognised_traffic()?)));
        let (rows, unrecognised) = stored.unwrap_or_else(|e| {
            tracing::warn!(error = %e, "could not read the stored token traffic; counting from zero");
            (Vec::new(), TokenTraffic::default())
        });
        let tokens = rows
            .into_iter()
            .map(|(id, traffic)| {
                let t = Tracked {
                    traffic,
                    dirty: false,
                };
                (id, t)
            })
            .collect();
        Liveness {
            tokens: Mutex::new(tokens),
            unrecognised: Mutex::new(Tracked {
                traffic: unrecognised,
                dirty: false,
            }),
            invalid: Mutex::new(TurnedAwayLog::default()),
            throttled: Mutex::new(TurnedAwayLog::default()),
        }
    }

    /// Notes a request turned away from `client` at `now`: a token that is not
    /// valid, or a limiter refusal (`TurnedAway::Throttled`).
    pub(crate) fn turned_away(&self, why: TurnedAway, client: IpAddr, now: Timestamp) {
        let log = match why {
            TurnedAway::Throttled { .. } => &self.throttled,
            _ => &self.invalid,
        };
        if let Ok(mut l) = log.lock() {
            l.note(why, client, now);
        }
    }

    /// Requests with a token that is not valid in the last hour, if any.
    pub(crate) fn invalid_tokens(&self, now: Timestamp) -> Option<TurnedAwaySummary> {
        self.invalid.lock().ok()?.summary(now)
    }

    /// Requests the limiter refused in the last hour, if any.
    pub(crate) fn throttled(&self, now: Timestamp) -> Option<TurnedAwaySummary> {
        self.throttled.lock().ok()?.summary(now)
    }

    /// Counts one answered request of the authenticated token `token_id`.
    pub(crate) fn count(&self, token_id: &str, status: u16, reason: Option<&str>, now: Timestamp) {
        if let Ok(mut m) = self.tokens.lock() {
            let t = m.entry(token_id.to_owned()).or_insert_with(|| Tracked {
                traffic: TokenTraffic::default(),
                dirty: true,
            });
            t.traffic.count(status, reason, now);
            t.dirty = true;
        }
    }

    /// Counts one answered request whose secret no token has (or that had none).
    pub(crate) fn count_unrecognised(&self, status: u16, now: Timestamp) {
        if let Ok(mut t) = self.unrecognised.lock() {
            t.traffic.count(status, None, now);
            t.dirty = true;
        }
    }

    /// The requests with no recognised token in the chart's `WINDOW_HOURS` clock
    /// hours ending with the one holding `now`, oldest first.
    pub(crate) fn unrecognised_hourly(&self, now: Timestamp) -> Vec<OutcomeCounts> {
        match self.unrecognised.lock() {
            Ok(t) => window_hours(&t.traffic, now),
            Err(_) => vec![OutcomeCounts::default(); WINDOW_HOURS as usize],
        }
    }

    /// The rows changed since the last call, marked clean.
    pub(crate) fn take_changed(&self) -> Vec<(String, TokenTraffic)> {
        let Ok(mut m) = self.tokens.lock() else {
            return Vec::new();
        };
        m.iter_mut()
            .filter(|(_, t)| t.dirty)
            .map(|(id, t)| {
                t.dirty = false;
                (id.clone(), t.traffic.clone())
            })
            .collect()
    }

    /// The counts of the requests no token sent, if changed since the last call,
    /// marked clean.
    pub(crate) fn take_unrecognised_changed(&self) -> Option<TokenTraffic> {
        let mut t = self.unrecognised.lock().ok()?;
        t.dirty.then(|| {
            t.dirty = false;
            t.traffic.clone()
        })
    }

    /// Marks rows changed again after the store could not take them (with
    /// `unrecognised`, that row too).
    pub(crate) fn retry(&self, ids: impl IntoIterator<Item = String>, unrecognised: bool) {
        if unrecognised {
            if let Ok(mut t) = self.unrecognised.lock() {
                t.dirty = true;
            }
        }
        if let Ok(mut m) = self.tokens.lock() {
            for id in ids {
                if let Some(t) = m.get_mut(&id) {
                    t.dirty = true;
                }
            }
        }
    }

    /// Drops the counts of tokens that are gone from the store.
    pub(crate) fn forget(&self, ids: &[String]) {
        if let Ok(mut m) = self.tokens.lock() {
            for id in ids {
                m.remove(id);
            }
        }
    }

    /// One token's traffic, if it sent anything that is still kept.
    pub(crate) fn traffic(&self, token_id: &str) -> Option<TokenTraffic> {
        self.tokens
            .lock()
            .ok()?
            .get(token_id)
            .map(|t| t.traffic.clone())
    }
}

/// Why a token needs the admin's eye. Each carries what the sentence needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum TokenWarning {
    /// The failing rule (`STREAK`, `SHARE_MIN_REQUESTS`) holds: the last `streak`
    /// requests in a row got an error; `recent` are the last two clock hours' counts
    /// by outcome class (refused, denied, failed: one vocabulary with the chart).
    Failing { streak: u32, recent: OutcomeCounts },
    /// The quiet-time alarm: nothing for `silent`, longer than the token's
    /// `quiet_after_minutes`.
    Quiet {
        silent: Duration,
        after_minutes: u32,
    },
    /// Active, and expires within `EXPIRY_WARNING_DAYS`: `left` from now.
    Expiring { left: Duration },
    /// Expired and not revoked: its identity provider gets 401.
    Expired,
}

impl TokenWarning {
    /// Every `kind`, for series that must always be present.
    pub(crate) const KINDS: [&'static str; 4] = ["failing", "quiet", "expiring", "expired"];

    /// `failing`, `quiet`, `expiring` or `expired` (metric label, page attribute).
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            TokenWarning::Failing { .. } => "failing",
            TokenWarning::Quiet { .. } => "quiet",
            TokenWarning::Expiring { .. } => "expiring",
            TokenWarning::Expired => "expired",
        }
    }

    /// Whether the admin must act now (an error) rather than soon (a warning).
    pub(crate) fn is_error(&self) -> bool {
        matches!(self, TokenWarning::Failing { .. } | TokenWarning::Expired)
    }
}

/// A token's liveness as the Tokens page, the dashboard and `/metrics` show it.
#[derive(Debug, Clone)]
pub(crate) struct TokenLiveness {
    /// The last authenticated request, flushed or not.
    pub last_request: Option<Timestamp>,
    /// The last `WINDOW_HOURS` clock hours, oldest first; the last is the current one.
    pub hourly: Vec<OutcomeCounts>,
    /// The sum of `hourly`.
    pub day: OutcomeCounts,
    /// The counts as kept: totals since the first request (monotonic), the failing
    /// streak, the last error.
    pub traffic: TokenTraffic,
    pub warnings: Vec<TokenWarning>,
}

/// Assesses one token at `now`. Revoked tokens keep their past hours' counts (the
/// chart shows what happened, and their secret's refused requests since) and get no
/// warnings.
///
/// Rules (issue 14 point 5), each a `TokenWarning`:
/// - **failing**: the last `STREAK` (5) requests all failed (status ≥ 400), or in
///   the current and the previous clock hour at least `SHARE_MIN_REQUESTS` (20)
///   requests were sent and more than half failed — an identity provider whose
///   every other request fails is as broken as one whose every request fails;
/// - **quiet**: the token is active, has a quiet-time alarm (off by default: Entra
///   ID's incremental cycles and Okta send nothing when nothing changed), and its
///   last request — or its creation, if it never sent one — is longer ago than that;
/// - **expiring**: active and expires within `EXPIRY_WARNING_DAYS` (14);
/// - **expired**: expired and not revoked.
pub(crate) fn assess(
    token: &TokenInfo,
    last_request: Option<Timestamp>,
    traffic: Option<TokenTraffic>,
    now: Timestamp,
) -> TokenLiveness {
    let traffic = traffic.unwrap_or_default();
    let revoked = token.state == TokenState::Revoked;
    let hourly = window_hours(&traffic, now);
    let mut warnings = Vec::new();
    let recent = traffic.window(now, 2);
    if !revoked
        && (traffic.failing_streak >= STREAK
            || (recent.total() >= SHARE_MIN_REQUESTS && recent.errors() * 2 > recent.total()))
    {
        warnings.push(TokenWarning::Failing {
            streak: traffic.failing_streak,
            recent,
        });
    }
    if token.state == TokenState::Active {
        if let Some(minutes) = token.quiet_after_minutes {
            let silent = now.since(last_request.unwrap_or(token.created));
            if silent > Duration::minutes(i64::from(minutes)) {
                warnings.push(TokenWarning::Quiet {
                    silent,
                    after_minutes: minutes,
                });
            }
        }
        if let Some(expires) = token.expires {
            let left = expires.since(now);
            if left <= Duration::days(EXPIRY_WARNING_DAYS) {
                warnings.push(TokenWarning::Expiring { left });
            }
        }
    }
    if token.state == TokenState::Expired {
        warnings.push(TokenWarning::Expired);
    }
    let mut day = OutcomeCounts::default();
    for h in &hourly {
        day.merge(h);
    }
    TokenLiveness {
        last_request,
        hourly,
        day,
        traffic,
        warnings,
    }
}

/// The counts of the `WINDOW_HOURS` clock hours ending with the one holding `now`,
/// oldest first (an hour without requests: zero).
fn window_hours(traffic: &TokenTraffic, now: Timestamp) -> Vec<OutcomeCounts> {
    let end = hour_of(now);
    (end - WINDOW_HOURS + 1..=end)
        .map(|h| {
            traffic
                .hours
                .iter()
                .find(|b| b.hour == h)
                .map(|b| b.counts)
                .unwrap_or_default()
        })
        .collect()
}

/// The hourly counts of several tokens added up (the dashboard's chart).
pub(crate) fn combined<'a>(
    tokens: impl IntoIterator<Item = &'a TokenLiveness>,
) -> Vec<OutcomeCounts> {
    let mut out = vec![OutcomeCounts::default(); WINDOW_HOURS as usize];
    for t in tokens {
        for (sum, h) in out.iter_mut().zip(&t.hourly) {
            sum.merge(h);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{OutcomeClass, Scope};

    fn at(s: &str) -> Timestamp {
        Timestamp::parse(s).unwrap()
    }

    fn token(state: TokenState) -> TokenInfo {
        TokenInfo {
            id: "t".into(),
            name: "entra".into(),
            scope: Scope::ReadWrite,
            state,
            created: at("2024-05-01T00:00:00Z"),
            last_used: None,
            expires: None,
            revoked: None,
            superseded: None,
            quiet_after_minutes: None,
        }
    }

    fn traffic(statuses: &[u16], now: Timestamp) -> TokenTraffic {
        let mut t = TokenTraffic::default();
        for s in statuses {
            t.count(*s, None, now);
        }
        t
    }

    fn failing(l: &TokenLiveness) -> bool {
        l.warnings
            .iter()
            .any(|w| matches!(w, TokenWarning::Failing { .. }))
    }

    #[test]
    fn five_failures_in_a_row_warn_and_one_success_clears() {
        let now = at("2024-05-01T10:00:00Z");
        let four = traffic(&[200, 400, 409, 400, 500], now);
        assert!(!failing(&assess(
            &token(TokenState::Active),
            None,
            Some(four.clone()),
            now
        )));
        let mut five = four;
        five.count(403, None, now);
        assert!(failing(&assess(
            &token(TokenState::Active),
            None,
            Some(five.clone()),
            now
        )));
        five.count(200, None, now);
        assert!(!failing(&assess(
            &token(TokenState::Active),
            None,
            Some(five),
            now
        )));
    }

    #[test]
    fn more_than_half_failing_over_two_hours_warns() {
        let now = at("2024-05-01T10:30:00Z");
        let mut statuses = Vec::new();
        for _ in 0..10 {
            statuses.extend([400, 200]);
        }
        statuses.push(400);
        let l = assess(
            &token(TokenState::Active),
            None,
            Some(traffic(&statuses, now)),
            now,
        );
        assert!(failing(&l), "11 of 21 failed");
        statuses.push(200);
        let l = assess(
            &token(TokenState::Active),
            None,
            Some(traffic(&statuses, now)),
            now,
        );
        assert!(!failing(&l), "11 of 22 is not more than half");
        // Too few requests to judge by share.
        let l = assess(
            &token(TokenState::Active),
            None,
            Some(traffic(&[400, 400, 200], now)),
            now,
        );
        assert!(!failing(&l));
    }

    #[test]
    fn the_quiet_alarm_is_off_by_default_and_fires_after_its_time() {
        let now = at("2024-05-01T10:00:00Z");
        let last = Some(at("2024-05-01T07:00:00Z"));
        let l = assess(&token(TokenState::Active), last, None, now);
        assert!(l.warnings.is_empty(), "{:?}", l.warnings);
        let mut t = token(TokenState::Active);
        t.quiet_after_minutes = Some(120);
        let l = assess(&t, last, None, now);
        assert_eq!(
            l.warnings,
            vec![TokenWarning::Quiet {
                silent: Duration::hours(3),
                after_minutes: 120
            }]
        );
        t.quiet_after_minutes = Some(240);
        assert!(assess(&t, last, None, now).warnings.is_empty());
        // Never used: measured from its creation.
        assert!(!assess(&t, None, None, now).warnings.is_empty());
    }

    #[test]
    fn expiry_warns_within_fourteen_days_and_expired_is_an_error() {
        let now = at("2024-05-01T10:00:00Z");
        let mut t = token(TokenState::Active);
        t.expires = Some(at("2024-05-20T10:00:00Z"));
        assert!(assess(&t, None, None, now).warnings.is_empty());
        t.expires = Some(at("2024-05-10T10:00:00Z"));
        let w = assess(&t, None, None, now).warnings;
        assert_eq!(
            w,
            vec![TokenWarning::Expiring {
                left: Duration::days(9)
            }]
        );
        assert!(!w[0].is_error());
        t.state = TokenState::Expired;
        let w = assess(&t, None, None, now).warnings;
        assert_eq!(w, vec![TokenWarning::Expired]);
        assert!(w[0].is_error());
    }

    #[test]
    fn revoked_tokens_keep_their_counts_without_warnings_and_the_window_is_24_hours() {
        let now = at("2024-05-02T10:30:00Z");
        let mut tr = traffic(&[200, 500], at("2024-05-01T10:10:00Z"));
        tr.count(201, None, at("2024-05-01T11:00:00Z"));
        tr.count(400, None, now);
        let l = assess(&token(TokenState::Active), None, Some(tr.clone()), now);
        assert_eq!(l.hourly.len(), 24);
        assert_eq!(l.day.total(), 2, "10:00 yesterday has left the window");
        assert_eq!(
            l.hourly[0].get(OutcomeClass::Ok),
            1,
            "11:00 yesterday is the first hour"
        );
        assert_eq!(l.hourly[23].get(OutcomeClass::Refused), 1);
        assert_eq!(l.traffic.totals.total(), 4);
        assert_eq!(combined([&l, &l])[23].total(), 2);
        let mut failing = tr.clone();
        for _ in 0..STREAK {
            failing.count(500, None, now);
        }
        let r = assess(&token(TokenState::Revoked), None, Some(failing), now);
        assert_eq!(
            r.day.total(),
            2 + u64::from(STREAK),
            "a revoked token's past hours stay on the chart"
        );
        assert_eq!(r.hourly[23].get(OutcomeClass::Failed), u64::from(STREAK));
        assert!(r.warnings.is_empty(), "{:?}", r.warnings);
    }

    #[test]
    fn turned_away_requests_are_counted_for_an_hour_with_the_last_one_named() {
        let d = tempfile::tempdir().unwrap();
        let s = Store::open(&d.path().join("db"), &Default::default()).unwrap();
        let l = Liveness::load(&s);
        let now = at("2024-05-01T10:00:00Z");
        assert!(l.invalid_tokens(now).is_none() && l.throttled(now).is_none());
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let why = TurnedAway::Unrecognised {
            why: "unknown token",
        };
        l.turned_away(why.clone(), a, at("2024-05-01T09:00:30Z"));
        for _ in 0..3 {
            l.turned_away(why.clone(), a, at("2024-05-01T09:30:00Z"));
        }
        let revoked = TurnedAway::Revoked {
            name: "okta".into(),
        };
        l.turned_away(revoked.clone(), b, at("2024-05-01T09:59:00Z"));
        let seen = l.invalid_tokens(now).unwrap();
        assert_eq!(seen.requests, 4, "09:00 is more than an hour ago");
        assert_eq!(seen.last.client, b);
        assert_eq!(seen.last.why, revoked);
        assert!(l.throttled(now).is_none(), "kept apart");
        l.turned_away(TurnedAway::Throttled { token: None }, a, now);
        assert_eq!(l.throttled(now).unwrap().requests, 1);
        assert!(l.invalid_tokens(at("2024-05-01T11:00:00Z")).is_none());
        let log = l.invalid.lock().unwrap();
        assert!(log.minutes.len() <= TURNED_AWAY_MINUTES as usize);
    }

    #[test]
    fn counts_wait_for_the_flusher_and_gone_ones_are_forgotten() {
        let d = tempfile::tempdir().unwrap();
        let s = Store::open(&d.path().join("db"), &Default::default()).unwrap();
        let l = Liveness::load(&s);
        let now = at("2024-05-01T10:00:00Z");
        l.count("a", 201, None, now);
        l.count("b", 400, Some("bad"), now);
        let mut changed = l.take_changed();
        changed.sort_by(|x, y| x.0.cmp(&y.0));
        assert_eq!(changed.len(), 2);
        assert!(l.take_changed().is_empty(), "clean until counted again");
        l.retry(["a".to_owned()], false);
        assert_eq!(l.take_changed().len(), 1);
        l.forget(&["b".to_owned()]);
        assert!(l.traffic("b").is_none());
        assert_eq!(l.traffic("a").unwrap().totals.total(), 1);
    }
}
