//! Admin sessions, their CSRF tokens and sign-in throttling. All in memory: a restart
//! signs every admin out and forgets failed attempts. Time is passed in so the rules
//! are tested without waiting. A session belongs to one account and the password it
//! signed in with (`app::admin::Credential`): each request asks whether that is still
//! the account's current password, so removing an account or setting its password
//! again (on the page, or by the CLI through the store) ends its sessions and no
//! other account's.
//!
//! A session id is 256 random bits sent only in an `HttpOnly` cookie; the table is
//! keyed by its SHA-256 so that the lookup's timing says nothing about stored ids.
//! Each session has its own CSRF token (another 256 bits) that every state-changing
//! form carries in a hidden field.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::app::admin::Credential;
use crate::auth::admin::random_string;
use crate::auth::hash_secret;
use crate::secret::equal as secrets_equal;

/// A session ends after this long without a request.
pub(crate) const IDLE_TIMEOUT: Duration = Duration::from_secs(30 * 60);
/// A session ends this long after sign-in, however busy.
pub(crate) const ABSOLUTE_TIMEOUT: Duration = Duration::from_secs(12 * 60 * 60);
/// Most sessions kept; the least recently used goes first.
const MAX_SESSIONS: usize = 256;

/// The window over which failed sign-ins are counted.
pub(crate) const THROTTLE_WINDOW: Duration = Duration::from_secs(15 * 60);
/// Failures from one address within the window that cost nothing but `FAILURE_DELAY`.
pub(crate) const FAILURES_PER_ADDRESS: usize = 5;
/// Past those, one attempt per address per this interval: slow enough to make
/// guessing useless (≤ 15 an hour), short enough that an admin whose address is
/// shared with a guesser still gets in.
pub(crate) const SLOW_INTERVAL: Duration = Duration::from_secs(60);
/// Every failed sign-in is answered this late (sequential guessing slows down; a
/// reservation is held meanwhile, so concurrent guesses do not get around it).
pub(crate) const FAILURE_DELAY: Duration = Duration::from_millis(500);
/// Addresses remembered; beyond this, the quiet ones are forgotten first.
const MAX_ADDRESSES: usize = 10_000;

/// A one-line message left for the next page after a form: what was done, or why
/// nothing was. The kind decides how the page shows it (`role="status"` in the
/// notice style, or `role="alert"` in the error style), so a refusal never reads
/// like a success.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Flash {
    /// The form did what it asked ("Revoked the token …").
    Notice(String),
    /// The form was refused or failed and nothing (or not all) was changed; the text
    /// says why.
    Refusal(String),
}

struct Entry {
    /// The admin account signed in (named in the audit trail) and its password.
    credential: Credential,
    csrf: String,
    created: Instant,
    last_seen: Instant,
    /// A one-line message for the next page (e.g. "token revoked").
    flash: Option<Flash>,
}

/// Proof that a request carries a valid session: the guard every signed-in admin
/// handler takes (as vaultwarden's `AdminToken` request guard). Its fields are
/// private to this module, so the only way to get one is `Sessions::signed_in`.
#[derive(Debug)]
pub(crate) struct SignedIn {
    /// The session id from the cookie (needed to sign out and to leave a message).
    id: String,
    credential: Credential,
    csrf: String,
    flash: Option<Flash>,
}

impl SignedIn {
    /// The admin account this session belongs to.
    pub(crate) fn account(&self) -> &str {
        &self.credential.account
    }
    /// The session's CSRF token, for the hidden field of every form.
    pub(crate) fn csrf(&self) -> &str {
        &self.csrf
    }
    /// The one-line message left for this page, if any.
    pub(crate) fn flash(&self) -> Option<&Flash> {
        self.flash.as_ref()
    }
    pub(super) fn id(&self) -> &str {
        &self.id
    }
}

#[derive(Default)]
pub(crate) struct Sessions {
    map: Mutex<HashMap<Vec<u8>, Entry>>,
}

impl Sessions {
    /// Starts a session for an account that just signed in; returns its id (for the
    /// cookie).
    pub(crate) fn create(
        &self,
        now: Instant,
        credential: Credential,
    ) -> Result<String, ring::error::Unspecified> {
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
                credential,
                csrf,
                created: now,
                last_seen: now,
                flash: None,
            },
        );
        Ok(id)
    }

    /// The session with this id if it is still valid and `current` says its
    /// credential still is the account's password, marking it used now and taking
    /// its flash message. A session whose account was removed or whose password was
    /// set again ends here.
    pub(crate) fn signed_in(
        &self,
        id: &str,
        now: Instant,
        current: impl FnOnce(&Credential) -> bool,
    ) -> Option<SignedIn> {
        let key = hash_secret(id);
        let credential = {
            let mut map = self.map.lock().ok()?;
            let entry = map.get(&key)?;
            if !alive(entry, now) {
                map.remove(&key);
                return None;
            }
            entry.credential.clone()
        };
        // Checked without the lock held: it reads the store.
        let still = current(&credential);
        let mut map = self.map.lock().ok()?;
        if !still {
            map.remove(&key);
            return None;
        }
        let entry = map.get_mut(&key)?;
        entry.last_seen = now;
        Some(SignedIn {
            id: id.to_owned(),
            credential,
            csrf: entry.csrf.clone(),
            flash: entry.flash.take(),
        })
    }

    /// Whether `given` is this session's CSRF token (constant time).
    pub(crate) fn csrf_ok(&self, id: &str, given: Option<&str>, now: Instant) -> bool {
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

    /// Leaves `message` for the session's next page (replacing an unread one).
    pub(crate) fn set_flash(&self, id: &str, message: Flash) {
        if let Ok(mut map) = self.map.lock() {
            if let Some(e) = map.get_mut(&hash_secret(id)) {
                e.flash = Some(message);
            }
        }
    }

    pub(crate) fn remove(&self, id: &str) {
        if let Ok(mut map) = self.map.lock() {
            map.remove(&hash_secret(id));
        }
    }
}

fn alive(e: &Entry, now: Instant) -> bool {
    now.saturating_duration_since(e.last_seen) < IDLE_TIMEOUT
        && now.saturating_duration_since(e.created) < ABSOLUTE_TIMEOUT
}

/// Sign-in attempts by client address (IPv6 by /64). An attempt is *reserved*
/// before the password is checked, so concurrent attempts cannot all pass a check
/// that only counts finished ones. There is no global limit: nobody can lock out
/// an address other than their own, and `scimbridge admin reset-password` on the
/// machine never goes through this.
#[derive(Default)]
pub(crate) struct Throttle {
    inner: Mutex<HashMap<IpAddr, Attempts>>,
}

#[derive(Default)]
struct Attempts {
    failures: VecDeque<Instant>,
    in_flight: usize,
    /// When an address past its free failures may try once more.
    next_slow: Option<Instant>,
}

fn expire(q: &mut VecDeque<Instant>, now: Instant) {
    while q
        .front()
        .is_some_and(|t| now.saturating_duration_since(*t) >= THROTTLE_WINDOW)
    {
        q.pop_front();
    }
}

/// One attempt in progress; say how it ended (dropping it counts as a failure, so
/// a client that hangs up during the check gains nothing).
#[must_use]
pub(crate) struct Reservation<'a> {
    throttle: &'a Throttle,
    key: IpAddr,
    done: bool,
}

impl Reservation<'_> {
    /// The attempt failed.
    pub(crate) fn failed(mut self, now: Instant) {
        self.done = true;
        self.throttle.finish(self.key, Some(now));
    }

    /// The attempt succeeded: the address's failures are forgotten.
    pub(crate) fn succeeded(mut self) {
        self.done = true;
        self.throttle.finish(self.key, None);
    }
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        if !self.done {
            self.throttle.finish(self.key, Some(Instant::now()));
        }
    }
}

impl Throttle {
    /// Reserves an attempt for `addr`, or says how long to wait.
    pub(crate) fn reserve(&self, addr: IpAddr, now: Instant) -> Result<Reservation<'_>, Duration> {
        let key = crate::limiter::address_key(addr);
        let Ok(mut m) = self.inner.lock() else {
            return Err(SLOW_INTERVAL);
        };
        if m.len() >= MAX_ADDRESSES && !m.contains_key(&key) {
            m.retain(|_, a| {
                expire(&mut a.failures, now);
                a.in_flight > 0 || !a.failures.is_empty()
            });
            if m.len() >= MAX_ADDRESSES {
                return Err(SLOW_INTERVAL);
            }
        }
        let a = m.entry(key).or_default();
        expire(&mut a.failures, now);
        if a.failures.len() + a.in_flight < FAILURES_PER_ADDRESS {
            a.in_flight += 1;
        } else {
            let at = a.next_slow.unwrap_or(now);
            if a.in_flight > 0 || now < at {
                return Err(at
                    .saturating_duration_since(now)
                    .max(Duration::from_secs(1)));
            }
            a.in_flight += 1;
            a.next_slow = Some(now + SLOW_INTERVAL);
        }
        Ok(Reservation {
            throttle: self,
            key,
            done: false,
        })
    }

    fn finish(&self, key: IpAddr, failed_at: Option<Instant>) {
        let Ok(mut m) = self.inner.lock() else { return };
        let Some(a) = m.get_mut(&key) else { return };
        a.in_flight = a.in_flight.saturating_sub(1);
        match failed_at {
            Some(now) => {
                a.failures.push_back(now);
                if a.failures.len() >= FAILURES_PER_ADDRESS {
                    a.next_slow = Some(now + SLOW_INTERVAL);
                }
            }
            None => {
                a.failures.clear();
                a.next_slow = None;
            }
        }
    }

    /// Forgets every address (a new password was set on the machine or by a setup
    /// link: whatever was guessed at is gone).
    pub(crate) fn clear(&self) {
        if let Ok(mut m) = self.inner.lock() {
            m.retain(|_, a| a.in_flight > 0);
            for a in m.values_mut() {
                a.failures.clear();
                a.next_slow = None;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cred(account: &str, salt: &str) -> Credential {
        Credential {
            account: account.into(),
            password_salt: salt.into(),
        }
    }

    fn yes(_: &Credential) -> bool {
        true
    }

    #[test]
    fn session_expires_when_idle_and_absolutely() {
        let s = Sessions::default();
        let t0 = Instant::now();
        let id = s.create(t0, cred("admin", "s1")).unwrap();
        assert!(s
            .signed_in(&id, t0 + Duration::from_secs(60), yes)
            .is_some());
        // Idle: 30 minutes after the last request.
        assert!(s
            .signed_in(&id, t0 + Duration::from_secs(60) + IDLE_TIMEOUT, yes)
            .is_none());
        // Busy but old: gone after 12 hours.
        let id = s.create(t0, cred("admin", "s1")).unwrap();
        let mut t = t0;
        while t < t0 + ABSOLUTE_TIMEOUT - Duration::from_secs(20 * 60) {
            t += Duration::from_secs(20 * 60);
            assert!(s.signed_in(&id, t, yes).is_some());
        }
        assert!(s.signed_in(&id, t0 + ABSOLUTE_TIMEOUT, yes).is_none());
    }

    #[test]
    fn unknown_and_removed_sessions_are_refused() {
        let s = Sessions::default();
        let t0 = Instant::now();
        assert!(s.signed_in("nope", t0, yes).is_none());
        let id = s.create(t0, cred("admin", "s1")).unwrap();
        s.remove(&id);
        assert!(s.signed_in(&id, t0, yes).is_none());
        // A credential that is no longer current ends the session for good.
        let admin = s.create(t0, cred("admin", "s1")).unwrap();
        let bob = s.create(t0, cred("bob", "s2")).unwrap();
        let only_bob = |c: &Credential| c.account == "bob";
        assert!(s.signed_in(&admin, t0, only_bob).is_none());
        assert!(s.signed_in(&admin, t0, yes).is_none());
        assert_eq!(s.signed_in(&bob, t0, only_bob).unwrap().account(), "bob");
    }

    #[test]
    fn csrf_token_is_per_session() {
        let s = Sessions::default();
        let t0 = Instant::now();
        let a = s.create(t0, cred("admin", "s1")).unwrap();
        let b = s.create(t0, cred("admin", "s1")).unwrap();
        let ca = s.signed_in(&a, t0, yes).unwrap().csrf().to_owned();
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
        let id = s.create(t0, cred("admin", "s1")).unwrap();
        s.set_flash(&id, Flash::Refusal("not done".into()));
        assert_eq!(
            s.signed_in(&id, t0, yes).unwrap().flash(),
            Some(&Flash::Refusal("not done".into()))
        );
        assert_eq!(s.signed_in(&id, t0, yes).unwrap().flash(), None);
    }

    #[test]
    fn five_free_failures_then_one_attempt_a_minute() {
        let th = Throttle::default();
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let t0 = Instant::now();
        for i in 0..FAILURES_PER_ADDRESS {
            th.reserve(a, t0)
                .unwrap()
                .failed(t0 + Duration::from_secs(i as u64));
        }
        let last = t0 + Duration::from_secs(FAILURES_PER_ADDRESS as u64 - 1);
        let wait = th.reserve(a, last).err().unwrap();
        assert_eq!(wait, SLOW_INTERVAL);
        assert!(
            th.reserve(b, t0).is_ok(),
            "other addresses are not affected"
        );
        // A minute later one attempt, and only one, is allowed; it succeeds.
        let r = th.reserve(a, last + SLOW_INTERVAL).unwrap();
        assert!(th.reserve(a, last + SLOW_INTERVAL).is_err());
        r.succeeded();
        assert!(th.reserve(a, last + SLOW_INTERVAL).is_ok());
    }

    #[test]
    fn concurrent_attempts_are_reserved_before_checking() {
        let th = Throttle::default();
        let a: IpAddr = "2001:db8::1".parse().unwrap();
        let same_64: IpAddr = "2001:db8::ffff".parse().unwrap();
        let t0 = Instant::now();
        let held: Vec<_> = (0..40).filter_map(|_| th.reserve(a, t0).ok()).collect();
        assert_eq!(held.len(), FAILURES_PER_ADDRESS);
        assert!(th.reserve(same_64, t0).is_err(), "a /64 is one address");
        // Dropped unfinished: counted as failures (at the time they were dropped).
        drop(held);
        assert!(th.reserve(a, t0).is_err());
        let after = Instant::now() + SLOW_INTERVAL;
        assert!(th.reserve(a, after).is_ok());
    }

    #[test]
    fn failures_leave_the_window_and_clear_forgets() {
        let th = Throttle::default();
        let a: IpAddr = "198.51.100.7".parse().unwrap();
        let t0 = Instant::now();
        for _ in 0..FAILURES_PER_ADDRESS {
            th.reserve(a, t0).unwrap().failed(t0);
        }
        assert!(th.reserve(a, t0 + Duration::from_secs(1)).is_err());
        // The window slid past them: free attempts again.
        let later = t0 + THROTTLE_WINDOW;
        for _ in 0..FAILURES_PER_ADDRESS {
            th.reserve(a, later).unwrap().failed(later);
        }
        assert!(th.reserve(a, later).is_err());
        th.clear();
        assert!(th.reserve(a, later).is_ok());
    }
}
