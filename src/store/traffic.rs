//! Per-token SCIM traffic as stored (issue 14 point 5): requests per clock hour by
//! outcome class, running totals, the current run of failed requests and the last
//! error, one JSON row per token id in `token_traffic`, and one row under
//! `UNRECOGNISED` for the requests no token of the bridge sent. The application layer
//! (`app::liveness`) counts in memory and hands the rows here in batches; this file
//! only keeps them. Which tokens may have a row is `tokens.rs`'s business: it
//! refuses rows of revoked or unknown tokens and deletes a token's row when it is
//! revoked. It knows no HTTP and no warning rule.

use redb::{ReadableTable, TableDefinition, WriteTransaction};
use serde::{Deserialize, Serialize};

use super::{Snapshot, StoreResult};
use crate::clock::Timestamp;

/// token id → `TokenTraffic` (JSON).
pub(super) const TOKEN_TRAFFIC: TableDefinition<&str, &[u8]> =
    TableDefinition::new("token_traffic");

/// The key of the row that is no token's: the requests whose secret no token has,
/// or that had no token (the dashboard's "no recognised token"). No token id (a
/// UUID) holds a `*`.
const UNRECOGNISED: &str = "*unrecognised";

/// How many clock hours of buckets a row keeps: the 24 h the page shows and a day
/// more, so that a restart or a late flush never cuts the window short.
pub(crate) const HOURS_KEPT: i64 = 48;

/// The class of a SCIM response, by status code (RFC 9110 §15).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum OutcomeClass {
    /// 1xx–3xx (304 Not Modified included): the request did what was asked.
    Ok,
    /// 4xx other than 401 and 403: bad input, conflict, not found, throttled, gone.
    Refused,
    /// 401 and 403: the token may not do this (a read-only token writing).
    Denied,
    /// 5xx: the server failed.
    Failed,
}

impl OutcomeClass {
    /// Every class, in the order of the stored counts and of the chart's stack.
    pub(crate) const ALL: [OutcomeClass; 4] = [
        OutcomeClass::Ok,
        OutcomeClass::Refused,
        OutcomeClass::Denied,
        OutcomeClass::Failed,
    ];

    /// The class of an HTTP status code.
    pub(crate) fn of(status: u16) -> OutcomeClass {
        match status {
            401 | 403 => OutcomeClass::Denied,
            400..=499 => OutcomeClass::Refused,
            500.. => OutcomeClass::Failed,
            _ => OutcomeClass::Ok,
        }
    }

    /// The metric label and CSS class: `ok`, `refused`, `denied`, `failed`.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            OutcomeClass::Ok => "ok",
            OutcomeClass::Refused => "refused",
            OutcomeClass::Denied => "denied",
            OutcomeClass::Failed => "failed",
        }
    }

    /// Whether the request counts as an error (every class but `Ok`).
    pub(crate) fn is_error(self) -> bool {
        self != OutcomeClass::Ok
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// Request counts by outcome class, in `OutcomeClass::ALL` order.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct OutcomeCounts(pub [u64; 4]);

impl OutcomeCounts {
    /// The count of one class.
    pub(crate) fn get(&self, c: OutcomeClass) -> u64 {
        self.0[c.index()]
    }

    /// Counts one request of class `c`.
    pub(crate) fn add(&mut self, c: OutcomeClass) {
        self.0[c.index()] = self.0[c.index()].saturating_add(1);
    }

    /// Adds another set of counts.
    pub(crate) fn merge(&mut self, other: &OutcomeCounts) {
        for (a, b) in self.0.iter_mut().zip(other.0) {
            *a = a.saturating_add(b);
        }
    }

    /// Every request counted.
    pub(crate) fn total(&self) -> u64 {
        self.0.iter().sum()
    }

    /// Requests that did not succeed.
    pub(crate) fn errors(&self) -> u64 {
        self.total() - self.get(OutcomeClass::Ok)
    }
}

/// The requests of one clock hour.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct HourBucket {
    /// Whole hours since the Unix epoch (UTC): `unix_seconds / 3600`.
    pub hour: i64,
    pub counts: OutcomeCounts,
}

/// The last request of a token that did not succeed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct LastError {
    pub at: Timestamp,
    pub status: u16,
    /// The SCIM error's `detail`, cut to `REASON_BYTES`.
    pub reason: Option<String>,
}

/// Longest stored reason, in bytes (cut at a character boundary).
const REASON_BYTES: usize = 300;

/// One token's traffic.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct TokenTraffic {
    /// Buckets of the last `HOURS_KEPT` hours that saw requests, oldest first.
    pub hours: Vec<HourBucket>,
    /// Every request counted since the token's first one (monotonic: `/metrics`).
    pub totals: OutcomeCounts,
    /// Failed requests in a row, ending with the latest; 0 after a success.
    pub failing_streak: u32,
    pub last_error: Option<LastError>,
}

/// The clock hour of `t`.
pub(crate) fn hour_of(t: Timestamp) -> i64 {
    t.unix_seconds().div_euclid(3600)
}

impl TokenTraffic {
    /// Counts one answered request at `now`; drops buckets older than `HOURS_KEPT`.
    pub(crate) fn count(&mut self, status: u16, reason: Option<&str>, now: Timestamp) {
        let class = OutcomeClass::of(status);
        let hour = hour_of(now);
        match self.hours.last_mut() {
            Some(b) if b.hour == hour => b.counts.add(class),
            // A clock stepped back counts into the latest bucket rather than
            // breaking the order.
            Some(b) if b.hour > hour => b.counts.add(class),
            _ => {
                let mut counts = OutcomeCounts::default();
                counts.add(class);
                self.hours.push(HourBucket { hour, counts });
            }
        }
        self.hours.retain(|b| b.hour > hour - HOURS_KEPT);
        self.totals.add(class);
        if class.is_error() {
            self.failing_streak = self.failing_streak.saturating_add(1);
            self.last_error = Some(LastError {
                at: now,
                status,
                reason: reason.map(|r| cut(r, REASON_BYTES)),
            });
        } else {
            self.failing_streak = 0;
        }
    }

    /// The counts of the `hours` clock hours that end with the one holding `now`
    /// (the current hour so far and the `hours - 1` before it).
    pub(crate) fn window(&self, now: Timestamp, hours: i64) -> OutcomeCounts {
        let end = hour_of(now);
        let mut sum = OutcomeCounts::default();
        for b in self.hours.iter().filter(|b| b.hour > end - hours) {
            sum.merge(&b.counts);
        }
        sum
    }
}

fn cut(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

impl Snapshot {
    /// Every stored token's traffic (token id, traffic).
    pub(crate) fn token_traffic(&self) -> StoreResult<Vec<(String, TokenTraffic)>> {
        let t = self.txn().open_table(TOKEN_TRAFFIC)?;
        let mut out = Vec::new();
        for row in t.iter()? {
            let (k, v) = row?;
            if k.value() != UNRECOGNISED {
                out.push((k.value().to_owned(), serde_json::from_slice(v.value())?));
            }
        }
        Ok(out)
    }

    /// The stored traffic of the requests no token of the bridge sent (empty before
    /// the first).
    pub(crate) fn unrecognised_traffic(&self) -> StoreResult<TokenTraffic> {
        let t = self.txn().open_table(TOKEN_TRAFFIC)?;
        let row = t.get(UNRECOGNISED)?;
        Ok(match row {
            Some(v) => serde_json::from_slice(v.value())?,
            None => TokenTraffic::default(),
        })
    }
}

/// Stores the rows (of tokens the caller found unrevoked).
pub(super) fn put_traffic_in(
    txn: &WriteTransaction,
    rows: Vec<(String, TokenTraffic)>,
) -> StoreResult<()> {
    let mut t = txn.open_table(TOKEN_TRAFFIC)?;
    for (id, traffic) in rows {
        t.insert(id.as_str(), serde_json::to_vec(&traffic)?.as_slice())?;
    }
    Ok(())
}

/// Stores the traffic of the requests no token of the bridge sent.
pub(super) fn put_unrecognised_in(
    txn: &WriteTransaction,
    traffic: &TokenTraffic,
) -> StoreResult<()> {
    txn.open_table(TOKEN_TRAFFIC)?
        .insert(UNRECOGNISED, serde_json::to_vec(traffic)?.as_slice())?;
    Ok(())
}

/// Deletes a token's row (on revoke: its series go with it).
pub(super) fn drop_traffic_in(txn: &WriteTransaction, id: &str) -> StoreResult<()> {
    txn.open_table(TOKEN_TRAFFIC)?.remove(id)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> Timestamp {
        Timestamp::parse(s).unwrap()
    }

    #[test]
    fn classes_follow_the_status() {
        assert_eq!(OutcomeClass::of(200), OutcomeClass::Ok);
        assert_eq!(OutcomeClass::of(304), OutcomeClass::Ok);
        assert_eq!(OutcomeClass::of(400), OutcomeClass::Refused);
        assert_eq!(OutcomeClass::of(429), OutcomeClass::Refused);
        assert_eq!(OutcomeClass::of(401), OutcomeClass::Denied);
        assert_eq!(OutcomeClass::of(403), OutcomeClass::Denied);
        assert_eq!(OutcomeClass::of(503), OutcomeClass::Failed);
    }

    #[test]
    fn hours_are_bucketed_windowed_and_pruned() {
        let mut t = TokenTraffic::default();
        t.count(201, None, at("2024-05-01T10:05:00Z"));
        t.count(409, Some("exists"), at("2024-05-01T10:59:59Z"));
        t.count(200, None, at("2024-05-01T11:00:00Z"));
        assert_eq!(t.hours.len(), 2);
        let now = at("2024-05-01T11:30:00Z");
        assert_eq!(t.window(now, 24).total(), 3);
        assert_eq!(t.window(now, 24).errors(), 1);
        assert_eq!(t.window(now, 1).total(), 1);
        // 24 hours later the 10:00 hour has left the window but is still kept.
        let later = at("2024-05-02T10:30:00Z");
        assert_eq!(t.window(later, 24).total(), 1);
        t.count(500, None, at("2024-05-03T11:30:00Z"));
        assert_eq!(t.hours.len(), 1, "buckets older than 48 h are dropped");
        assert_eq!(t.totals.total(), 4, "totals never drop");
        assert_eq!(t.totals.get(OutcomeClass::Failed), 1);
    }

    #[test]
    fn the_streak_counts_failures_in_a_row_and_keeps_the_last_error() {
        let mut t = TokenTraffic::default();
        let now = at("2024-05-01T10:00:00Z");
        t.count(400, Some(&"x".repeat(400)), now);
        t.count(403, Some("read-only"), now);
        assert_eq!(t.failing_streak, 2);
        assert_eq!(t.last_error.as_ref().unwrap().status, 403);
        t.count(200, None, now);
        assert_eq!(t.failing_streak, 0);
        assert_eq!(
            t.last_error.as_ref().unwrap().reason.as_deref(),
            Some("read-only")
        );
        t.count(400, Some(&"é".repeat(200)), now);
        let r = t.last_error.unwrap().reason.unwrap();
        assert!(
            r.len() <= REASON_BYTES + "…".len() && r.ends_with('…'),
            "{r}"
        );
    }
}
