//! The one limiter: how much work each client may have in progress at once, and how
//! often an address may fail to authenticate. Every edge asks it before doing work;
//! a refusal carries the wait to announce (`Retry-After`, RFC 9110 §10.2.3, with
//! status 429, RFC 6585 §4).
//!
//! A client is a *subject*: the SCIM token a request authenticated with, or, for a
//! request without a valid token (the admin page, `/metrics`, `/readyz`), its client
//! address. Requests that carry a valid token are never limited by address: identity
//! providers send from shared cloud addresses. Work comes in two classes:
//! - `Work::Request`: any request in progress, from when it is admitted until its
//!   response has been sent (a client that does not read its answers keeps its
//!   permits, so it cannot pile up responses in memory);
//! - `Work::Heavy`: work whose cost grows with the directory or the body (scans,
//!   sorts, Bulk). It needs a per-subject heavy permit *and* one of a few slots shared
//!   by everyone (one per core by default), so heavy work runs on at most that many
//!   threads at once; a request waits up to `HEAVY_WAIT` for a shared slot before it
//!   is refused. A scan of a whole table takes a second slot for a second thread
//!   when one is free (`Limiter::spare_slot`). The async workers that answer
//!   `/healthz` and cheap requests are other threads, which the kernel schedules
//!   between the heavy ones (issue 10: `/healthz` p99 measured while a scan runs on
//!   both cores, docs/PERFORMANCE.md).
//!
//! Failed authentications are counted per address in a token bucket: `auth_failures`
//! may fail within `auth_failure_window`, then the address must wait for the bucket
//! to refill. IPv6 addresses are grouped by /64 (one host usually owns one).
//!
//! Knows nothing of HTTP, tokens' secrets or the store; time is passed in where a
//! rule depends on it.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// How long heavy work waits for a shared slot before it is refused.
pub(crate) const HEAVY_WAIT: Duration = Duration::from_secs(2);
/// What a refusal of concurrent work announces as `Retry-After`.
const BUSY_RETRY: Duration = Duration::from_secs(1);
/// Addresses whose failed authentications are remembered; beyond this the ones with
/// a full bucket are forgotten first (bounds memory under an address spray).
const MAX_TRACKED_ADDRESSES: usize = 16_384;

/// The limits, from the `[limits]` section of the configuration (whose keys are
/// these fields' names; unset keys keep the defaults).
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(default)]
pub(crate) struct LimiterConfig {
    /// Requests in progress per SCIM token (`limits.token_requests`).
    pub token_requests: usize,
    /// Heavy requests in progress per SCIM token (`limits.token_heavy`).
    pub token_heavy: usize,
    /// Requests in progress per client address, for requests without a valid token
    /// (`limits.address_requests`).
    pub address_requests: usize,
    /// Heavy requests in progress per client address (`limits.address_heavy`).
    pub address_heavy: usize,
    /// Heavy requests in progress in total (`limits.heavy_slots`).
    pub heavy_slots: usize,
    /// Failed authentications an address may make within `auth_failure_window`
    /// (`limits.auth_failures`).
    pub auth_failures: u32,
    /// The window in which `auth_failures` refill (`limits.auth_failure_window_secs`).
    #[serde(rename = "auth_failure_window_secs", deserialize_with = "seconds")]
    pub auth_failure_window: Duration,
}

/// A duration written as whole seconds.
fn seconds<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    serde::Deserialize::deserialize(d).map(Duration::from_secs)
}

impl Default for LimiterConfig {
    fn default() -> Self {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        LimiterConfig {
            token_requests: 64,
            token_heavy: 4,
            address_requests: 32,
            address_heavy: 2,
            // One thread of heavy work per core: a lone scan may use them all (the
            // async workers still get their turns from the kernel's scheduler).
            heavy_slots: cores.max(1),
            auth_failures: 20,
            auth_failure_window: Duration::from_secs(60),
        }
    }
}

/// Who is asking.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum Subject {
    /// A request authenticated by this token id.
    Token(String),
    /// A request without a valid token, from this client address.
    Address(IpAddr),
}

/// The class of work.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Work {
    Request,
    Heavy,
}

/// Why work was refused: a closed set, used as a metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reason {
    TokenRequests,
    TokenHeavy,
    AddressRequests,
    AddressHeavy,
    HeavySlots,
    AuthFailures,
}

impl Reason {
    pub(crate) const ALL: [Reason; 6] = [
        Reason::TokenRequests,
        Reason::TokenHeavy,
        Reason::AddressRequests,
        Reason::AddressHeavy,
        Reason::HeavySlots,
        Reason::AuthFailures,
    ];

    /// The metric label.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Reason::TokenRequests => "token_requests",
            Reason::TokenHeavy => "token_heavy",
            Reason::AddressRequests => "address_requests",
            Reason::AddressHeavy => "address_heavy",
            Reason::HeavySlots => "heavy_slots",
            Reason::AuthFailures => "auth_failures",
        }
    }

    /// Words for the client: which limit, and what to do.
    pub(crate) fn explain(self) -> &'static str {
        match self {
            Reason::TokenRequests => "too many requests in progress with this token",
            Reason::TokenHeavy => {
                "too many expensive requests (scans, sorts, Bulk) in progress with this token"
            }
            Reason::AddressRequests => "too many requests in progress from this address",
            Reason::AddressHeavy => "too many expensive requests in progress from this address",
            Reason::HeavySlots => "the server is busy with other expensive requests",
            Reason::AuthFailures => "too many failed authentications from this address",
        }
    }
}

/// A refusal: which limit, and how long to wait before retrying.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Throttled {
    pub reason: Reason,
    pub retry_after: Duration,
}

impl Throttled {
    /// `Retry-After` in whole seconds, at least 1.
    pub(crate) fn retry_after_secs(&self) -> u64 {
        self.retry_after.as_secs_f64().ceil().max(1.0) as u64
    }
}

/// Work admitted; dropping it gives the capacity back.
#[must_use = "the work is admitted only while the permit is held"]
pub(crate) struct Permit {
    inner: Arc<Inner>,
    key: (Subject, Work),
    _slot: Option<OwnedSemaphorePermit>,
}

impl std::fmt::Debug for Permit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Permit").field("work", &self.key.1).finish()
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        if let Ok(mut m) = self.inner.in_progress.lock() {
            if let Some(n) = m.get_mut(&self.key) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    m.remove(&self.key);
                }
            }
        }
    }
}

/// A shared heavy-work slot taken by `Limiter::spare_slot`; dropping it gives it back.
#[must_use = "the slot is taken only while this is held"]
pub(crate) struct SpareSlot {
    _slot: OwnedSemaphorePermit,
}

/// A token bucket of allowed authentication failures.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

struct Inner {
    config: LimiterConfig,
    in_progress: Mutex<HashMap<(Subject, Work), usize>>,
    heavy_slots: Arc<Semaphore>,
    failures: Mutex<HashMap<IpAddr, Bucket>>,
    refused: [AtomicU64; Reason::ALL.len()],
}

/// The limiter; cheap to clone (shared state).
#[derive(Clone)]
pub(crate) struct Limiter {
    inner: Arc<Inner>,
}

/// The key an address is counted under: IPv4 as is, IPv6 by its /64 (IPv4-mapped
/// IPv6 as the IPv4 address).
pub(crate) fn address_key(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V4(_) => addr,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

impl Limiter {
    pub(crate) fn new(config: LimiterConfig) -> Limiter {
        let slots = config.heavy_slots.max(1);
        Limiter {
            inner: Arc::new(Inner {
                config,
                in_progress: Mutex::new(HashMap::new()),
                heavy_slots: Arc::new(Semaphore::new(slots)),
                failures: Mutex::new(HashMap::new()),
                refused: Default::default(),
            }),
        }
    }

    fn refuse(&self, reason: Reason, retry_after: Duration) -> Throttled {
        self.inner.refused[reason as usize].fetch_add(1, Ordering::Relaxed);
        Throttled {
            reason,
            retry_after,
        }
    }

    /// How many times each limit refused work since start (for metrics).
    pub(crate) fn refusals(&self) -> impl Iterator<Item = (Reason, u64)> + '_ {
        Reason::ALL
            .iter()
            .map(|r| (*r, self.inner.refused[*r as usize].load(Ordering::Relaxed)))
    }

    /// Admits `work` for `subject` if it is under its limit, without waiting. For
    /// `Work::Heavy` this is only the per-subject part; use `heavy` for the shared
    /// slots too.
    fn admit(&self, subject: Subject, work: Work) -> Result<Permit, Throttled> {
        let c = &self.inner.config;
        let (subject, limit, reason) = match (subject, work) {
            (Subject::Token(t), Work::Request) => {
                (Subject::Token(t), c.token_requests, Reason::TokenRequests)
            }
            (Subject::Token(t), Work::Heavy) => {
                (Subject::Token(t), c.token_heavy, Reason::TokenHeavy)
            }
            (Subject::Address(a), Work::Request) => (
                Subject::Address(address_key(a)),
                c.address_requests,
                Reason::AddressRequests,
            ),
            (Subject::Address(a), Work::Heavy) => (
                Subject::Address(address_key(a)),
                c.address_heavy,
                Reason::AddressHeavy,
            ),
        };
        let key = (subject, work);
        let Ok(mut m) = self.inner.in_progress.lock() else {
            return Err(self.refuse(reason, BUSY_RETRY));
        };
        let n = m.entry(key.clone()).or_insert(0);
        if *n >= limit {
            drop(m);
            return Err(self.refuse(reason, BUSY_RETRY));
        }
        *n += 1;
        Ok(Permit {
            inner: self.inner.clone(),
            key,
            _slot: None,
        })
    }

    /// Admits one request in progress for `subject`, or refuses at once.
    pub(crate) fn request(&self, subject: Subject) -> Result<Permit, Throttled> {
        self.admit(subject, Work::Request)
    }

    /// Admits heavy work for `subject`: its own heavy limit (refused at once when
    /// reached), then a shared slot (waiting up to `HEAVY_WAIT`).
    pub(crate) async fn heavy(&self, subject: Subject) -> Result<Permit, Throttled> {
        let mut permit = self.admit(subject, Work::Heavy)?;
        let slots = self.inner.heavy_slots.clone();
        match tokio::time::timeout(HEAVY_WAIT, slots.acquire_owned()).await {
            Ok(Ok(slot)) => {
                permit._slot = Some(slot);
                Ok(permit)
            }
            _ => Err(self.refuse(Reason::HeavySlots, BUSY_RETRY)),
        }
    }

    /// One more shared heavy-work slot, if one is free right now (never waits): for
    /// a second thread of heavy work already admitted (a scan split over two threads,
    /// `app::query::Threads::Two`), so the threads doing heavy work never outnumber
    /// `heavy_slots`. Dropping it gives the slot back.
    pub(crate) fn spare_slot(&self) -> Option<SpareSlot> {
        let slots = self.inner.heavy_slots.clone();
        slots
            .try_acquire_owned()
            .ok()
            .map(|slot| SpareSlot { _slot: slot })
    }

    /// Whether `addr` has used up its failed authentications (then the wait). The
    /// server does not ask before checking a token (a check is one hash lookup);
    /// the tests use it to watch the bucket.
    #[cfg(test)]
    pub(crate) fn auth_throttled(&self, addr: IpAddr, now: Instant) -> Option<Throttled> {
        let key = address_key(addr);
        let m = self.inner.failures.lock().ok()?;
        let b = m.get(&key)?;
        let wait = self.bucket_wait(self.refill(*b, now));
        (wait > Duration::ZERO).then(|| self.refuse(Reason::AuthFailures, wait))
    }

    /// Counts one failed authentication from `addr`; `Err` when that used up the
    /// last allowed one (the request is then answered 429 rather than 401).
    pub(crate) fn auth_failed(&self, addr: IpAddr, now: Instant) -> Result<(), Throttled> {
        let key = address_key(addr);
        let Ok(mut m) = self.inner.failures.lock() else {
            return Ok(());
        };
        if m.len() >= MAX_TRACKED_ADDRESSES && !m.contains_key(&key) {
            let full = f64::from(self.inner.config.auth_failures);
            m.retain(|_, b| self.refill(*b, now).tokens < full);
            if m.len() >= MAX_TRACKED_ADDRESSES {
                // Still full of active attackers: forget an arbitrary half.
                let drop: Vec<IpAddr> = m.keys().step_by(2).copied().collect();
                for k in drop {
                    m.remove(&k);
                }
            }
        }
        let full = Bucket {
            tokens: f64::from(self.inner.config.auth_failures),
            at: now,
        };
        let b = m.entry(key).or_insert(full);
        let mut refilled = self.refill(*b, now);
        if refilled.tokens >= 1.0 {
            refilled.tokens -= 1.0;
            *b = refilled;
            return Ok(());
        }
        *b = refilled;
        let wait = self.bucket_wait(refilled);
        drop(m);
        Err(self.refuse(Reason::AuthFailures, wait))
    }

    /// A successful authentication does not reset the bucket: a guesser with one
    /// valid token must not get fresh guesses for other ones.
    fn refill(&self, b: Bucket, now: Instant) -> Bucket {
        let c = &self.inner.config;
        let cap = f64::from(c.auth_failures);
        let per_sec = cap / c.auth_failure_window.as_secs_f64().max(0.001);
        let elapsed = now.saturating_duration_since(b.at).as_secs_f64();
        Bucket {
            tokens: (b.tokens + elapsed * per_sec).min(cap),
            at: now.max(b.at),
        }
    }

    /// Time until the bucket holds one failure again.
    fn bucket_wait(&self, b: Bucket) -> Duration {
        if b.tokens >= 1.0 {
            return Duration::ZERO;
        }
        let c = &self.inner.config;
        let per_sec = f64::from(c.auth_failures) / c.auth_failure_window.as_secs_f64().max(0.001);
        if per_sec <= 0.0 {
            return c.auth_failure_window;
        }
        Duration::from_secs_f64((1.0 - b.tokens) / per_sec)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small() -> Limiter {
        Limiter::new(LimiterConfig {
            token_requests: 2,
            token_heavy: 1,
            address_requests: 1,
            address_heavy: 1,
            heavy_slots: 1,
            auth_failures: 3,
            auth_failure_window: Duration::from_secs(30),
        })
    }

    #[test]
    fn requests_are_limited_per_token_and_released_on_drop() {
        let l = small();
        let a = l.request(Subject::Token("t1".into())).unwrap();
        let _b = l.request(Subject::Token("t1".into())).unwrap();
        let refused = l.request(Subject::Token("t1".into())).unwrap_err();
        assert_eq!(refused.reason, Reason::TokenRequests);
        assert_eq!(refused.retry_after_secs(), 1);
        // Another token is not affected.
        let _c = l.request(Subject::Token("t2".into())).unwrap();
        drop(a);
        let _d = l.request(Subject::Token("t1".into())).unwrap();
        assert_eq!(
            l.refusals()
                .find(|(r, _)| *r == Reason::TokenRequests)
                .unwrap()
                .1,
            1
        );
    }

    #[test]
    fn addresses_are_limited_and_ipv6_is_grouped_by_64() {
        let l = small();
        let v6a: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let v6b: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        let other: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        let _p = l.request(Subject::Address(v6a)).unwrap();
        assert_eq!(
            l.request(Subject::Address(v6b)).unwrap_err().reason,
            Reason::AddressRequests
        );
        let _q = l.request(Subject::Address(other)).unwrap();
        let mapped: IpAddr = "::ffff:192.0.2.7".parse().unwrap();
        let _r = l.request(Subject::Address(mapped)).unwrap();
        assert!(l
            .request(Subject::Address("192.0.2.7".parse().unwrap()))
            .is_err());
    }

    #[tokio::test]
    async fn heavy_work_needs_a_subject_permit_and_a_shared_slot() {
        let l = small();
        let h1 = l.heavy(Subject::Token("t1".into())).await.unwrap();
        assert_eq!(
            l.heavy(Subject::Token("t1".into()))
                .await
                .unwrap_err()
                .reason,
            Reason::TokenHeavy
        );
        // Another token waits for the one shared slot, then gives up.
        let t0 = Instant::now();
        let e = l.heavy(Subject::Token("t2".into())).await.unwrap_err();
        assert_eq!(e.reason, Reason::HeavySlots);
        assert!(t0.elapsed() >= HEAVY_WAIT);
        // A slot freed while waiting is taken.
        let l2 = l.clone();
        let waiter = tokio::spawn(async move { l2.heavy(Subject::Token("t2".into())).await });
        tokio::time::sleep(Duration::from_millis(50)).await;
        drop(h1);
        assert!(waiter.await.unwrap().is_ok());
        // Heavy permits do not count against plain requests.
        assert!(l.request(Subject::Token("t2".into())).is_ok());
    }

    #[test]
    fn auth_failures_refill_over_the_window() {
        let l = small();
        let a: IpAddr = "198.51.100.1".parse().unwrap();
        let b: IpAddr = "198.51.100.2".parse().unwrap();
        let t0 = Instant::now();
        assert!(l.auth_throttled(a, t0).is_none());
        for _ in 0..3 {
            assert!(l.auth_failed(a, t0).is_ok());
        }
        let e = l.auth_failed(a, t0).unwrap_err();
        assert_eq!(e.reason, Reason::AuthFailures);
        // 3 per 30 s: one comes back every 10 s.
        assert_eq!(e.retry_after_secs(), 10);
        assert!(l.auth_throttled(a, t0 + Duration::from_secs(5)).is_some());
        assert!(
            l.auth_throttled(b, t0).is_none(),
            "other addresses unaffected"
        );
        assert!(l.auth_throttled(a, t0 + Duration::from_secs(10)).is_none());
        assert!(l.auth_failed(a, t0 + Duration::from_secs(10)).is_ok());
        assert!(l.auth_failed(a, t0 + Duration::from_secs(10)).is_err());
    }

    #[test]
    fn failure_memory_is_bounded() {
        let l = small();
        let t0 = Instant::now();
        for i in 0..(MAX_TRACKED_ADDRESSES as u32 + 10) {
            let addr = IpAddr::V4(std::net::Ipv4Addr::from(0x0a00_0000 + i));
            let _ = l.auth_failed(addr, t0);
        }
        assert!(l.inner.failures.lock().unwrap().len() <= MAX_TRACKED_ADDRESSES);
    }
}
