//! Admin sessions, their CSRF tokens and login throttling. All in memory: a restart
//! signs every admin out and forgets failed attempts. Time is passed in so the rules
//! are tested without waiting.
//!
//! A session id is 256 random bits sent only in an `HttpOnly` cookie; the table is
//! keyed by its SHA-256 so that the lookup's timing says nothing about stored ids.
//! Each session has its own CSRF token (another 256 bits) that every state-changing
//! form carries in a hidden field.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::auth::admin::random_string;
use crate::auth::hash_secret;
use crate::secret::equal as secrets_equal;

/// A session ends after this long without a request.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(30 * 60);
/// A session ends this long after sign-in, however busy.
pub const ABSOLUTE_TIMEOUT: Duration = Duration::from_secs(12 * 60 * 60);
/// Most sessions kept; the least recently used goes first.
const MAX_SESSIONS: usize = 256;

/// The window over which failed sign-ins are counted.
pub const THROTTLE_WINDOW: Duration = Duration::from_secs(15 * 60);
/// Failures from one address within the window before it must wait.
pub const FAILURES_PER_ADDRESS: usize = 5;
/// Failures from everyone within the window before everyone must wait (a
/// distributed guess, or all clients behind one proxy).
pub const FAILURES_GLOBAL: usize = 50;

struct Entry {
    csrf: String,
    created: Instant,
    last_seen: Instant,
    /// A one-line message for the next page (e.g. "token revoked").
    flash: Option<String>,
}

/// What a request learns about its valid session.
#[derive(Debug, Clone)]
pub struct SessionView {
    pub csrf: String,
    pub flash: Option<String>,
}

#[derive(Default)]
pub struct Sessions {
    map: Mutex<HashMap<Vec<u8>, Entry>>,
}

impl Sessions {
    /// Starts a session; returns its id (for the cookie).
    pub fn create(&self, now: Instant) -> Result<String, ring::error::Unspecified> {
        let id = random_string(32)?;
        let csrf = random_string(32)?;
        let mut map = self.map.lock().map_err(|_| ring::error::Unspecified)?;
        map.retain(|_, e| alive(e, now));
        if map.len() >= MAX_SESSIONS {
            if let Some(oldest) = map
                .iter()
                .min_by_key(|(_, e)| e.last_seen)
                .map(|(k, _)| k.clone())
            {
                map.remove(&oldest);
            }
        }
        map.insert(
            hash_secret(&id),
            Entry {
                csrf,
                created: now,
                last_seen: now,
                flash: None,
            },
        );
        Ok(id)
    }

    /// The session with this id if it is still valid, marking it used now and
    /// taking its flash message.
    pub fn touch(&self, id: &str, now: Instant) -> Option<SessionView> {
        let key = hash_secret(id);
        let mut map = self.map.lock().ok()?;
        let entry = map.get_mut(&key)?;
        if !alive(entry, now) {
            map.remove(&key);
            return None;
        }
        entry.last_seen = now;
        Some(SessionView {
            csrf: entry.csrf.clone(),
            flash: entry.flash.take(),
        })
    }

    /// Whether `given` is this session's CSRF token (constant time).
    pub fn csrf_ok(&self, id: &str, given: Option<&str>, now: Instant) -> bool {
        let Some(given) = given.filter(|g| !g.is_empty()) else {
            return false;
        };
        let key = hash_secret(id);
        let Ok(map) = self.map.lock() else {
            return false;
        };
        map.get(&key)
            .is_some_and(|e| alive(e, now) && secrets_equal(&e.csrf, given))
    }

    pub fn set_flash(&self, id: &str, message: String) {
        if let Ok(mut map) = self.map.lock() {
            if let Some(e) = map.get_mut(&hash_secret(id)) {
                e.flash = Some(message);
            }
        }
    }

    pub fn remove(&self, id: &str) {
        if let Ok(mut map) = self.map.lock() {
            map.remove(&hash_secret(id));
        }
    }

    /// Signs everyone out (a new password was set).
    pub fn clear(&self) {
        if let Ok(mut map) = self.map.lock() {
            map.clear();
        }
    }
}

fn alive(e: &Entry, now: Instant) -> bool {
    now.saturating_duration_since(e.last_seen) < IDLE_TIMEOUT
        && now.saturating_duration_since(e.created) < ABSOLUTE_TIMEOUT
}

/// Failed sign-ins by client address and in total, over a sliding window.
#[derive(Default)]
pub struct Throttle {
    inner: Mutex<ThrottleInner>,
}

#[derive(Default)]
struct ThrottleInner {
    by_address: HashMap<IpAddr, VecDeque<Instant>>,
    all: VecDeque<Instant>,
}

fn expire(q: &mut VecDeque<Instant>, now: Instant) {
    while q
        .front()
        .is_some_and(|t| now.saturating_duration_since(*t) >= THROTTLE_WINDOW)
    {
        q.pop_front();
    }
}

/// How long until the oldest counted failure leaves the window.
fn wait(q: &VecDeque<Instant>, now: Instant) -> Duration {
    q.front().map_or(Duration::ZERO, |t| {
        THROTTLE_WINDOW.saturating_sub(now.saturating_duration_since(*t))
    })
}

impl Throttle {
    /// `Err(wait)` when `addr` (or everyone) has failed too often recently.
    pub fn check(&self, addr: IpAddr, now: Instant) -> Result<(), Duration> {
        let Ok(mut t) = self.inner.lock() else {
            return Ok(());
        };
        expire(&mut t.all, now);
        if t.all.len() >= FAILURES_GLOBAL {
            return Err(wait(&t.all, now));
        }
        if let Some(q) = t.by_address.get_mut(&addr) {
            expire(q, now);
            if q.len() >= FAILURES_PER_ADDRESS {
                return Err(wait(q, now));
            }
        }
        Ok(())
    }

    pub fn failure(&self, addr: IpAddr, now: Instant) {
        if let Ok(mut t) = self.inner.lock() {
            expire(&mut t.all, now);
            t.all.push_back(now);
            // Bound memory under a spray from many addresses.
            if t.by_address.len() > 10_000 {
                t.by_address.retain(|_, q| {
                    expire(q, now);
                    !q.is_empty()
                });
            }
            let q = t.by_address.entry(addr).or_default();
            expire(q, now);
            q.push_back(now);
        }
    }

    /// A successful sign-in forgets that address's failures.
    pub fn success(&self, addr: IpAddr) {
        if let Ok(mut t) = self.inner.lock() {
            t.by_address.remove(&addr);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_expires_when_idle_and_absolutely() {
        let s = Sessions::default();
        let t0 = Instant::now();
        let id = s.create(t0).unwrap();
        assert!(s.touch(&id, t0 + Duration::from_secs(60)).is_some());
        // Idle: 30 minutes after the last request.
        assert!(s
            .touch(&id, t0 + Duration::from_secs(60) + IDLE_TIMEOUT)
            .is_none());
        // Busy but old: gone after 12 hours.
        let id = s.create(t0).unwrap();
        let mut t = t0;
        while t < t0 + ABSOLUTE_TIMEOUT - Duration::from_secs(20 * 60) {
            t += Duration::from_secs(20 * 60);
            assert!(s.touch(&id, t).is_some());
        }
        assert!(s.touch(&id, t0 + ABSOLUTE_TIMEOUT).is_none());
    }

    #[test]
    fn unknown_and_removed_sessions_are_refused() {
        let s = Sessions::default();
        let t0 = Instant::now();
        assert!(s.touch("nope", t0).is_none());
        let id = s.create(t0).unwrap();
        s.remove(&id);
        assert!(s.touch(&id, t0).is_none());
        let id = s.create(t0).unwrap();
        s.clear();
        assert!(s.touch(&id, t0).is_none());
    }

    #[test]
    fn csrf_token_is_per_session() {
        let s = Sessions::default();
        let t0 = Instant::now();
        let a = s.create(t0).unwrap();
        let b = s.create(t0).unwrap();
        let ca = s.touch(&a, t0).unwrap().csrf;
        assert!(s.csrf_ok(&a, Some(&ca), t0));
        assert!(!s.csrf_ok(&b, Some(&ca), t0));
        assert!(!s.csrf_ok(&a, None, t0));
        assert!(!s.csrf_ok(&a, Some(""), t0));
        assert!(!s.csrf_ok(&a, Some("x"), t0));
    }

    #[test]
    fn flash_is_shown_once() {
        let s = Sessions::default();
        let t0 = Instant::now();
        let id = s.create(t0).unwrap();
        s.set_flash(&id, "done".into());
        assert_eq!(s.touch(&id, t0).unwrap().flash.as_deref(), Some("done"));
        assert_eq!(s.touch(&id, t0).unwrap().flash, None);
    }

    #[test]
    fn throttle_per_address_then_window_slides() {
        let th = Throttle::default();
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let t0 = Instant::now();
        for i in 0..FAILURES_PER_ADDRESS {
            assert!(th.check(a, t0).is_ok());
            th.failure(a, t0 + Duration::from_secs(i as u64));
        }
        let wait = th.check(a, t0 + Duration::from_secs(10)).unwrap_err();
        assert!(wait > Duration::from_secs(14 * 60) && wait <= THROTTLE_WINDOW);
        assert!(th.check(b, t0).is_ok(), "other addresses are not affected");
        assert!(th
            .check(a, t0 + THROTTLE_WINDOW - Duration::from_secs(1))
            .is_err());
        // The oldest failure leaves the window: one more attempt is allowed.
        assert!(th.check(a, t0 + THROTTLE_WINDOW).is_ok());
        th.success(a);
        assert!(th.check(a, t0).is_ok());
    }

    #[test]
    fn throttle_globally() {
        let th = Throttle::default();
        let t0 = Instant::now();
        for i in 0..FAILURES_GLOBAL {
            let addr: IpAddr = format!("198.51.100.{}", i % 250).parse().unwrap();
            th.failure(addr, t0);
        }
        let fresh: IpAddr = "203.0.113.9".parse().unwrap();
        assert!(th.check(fresh, t0).is_err());
        assert!(th.check(fresh, t0 + THROTTLE_WINDOW).is_ok());
    }
}
