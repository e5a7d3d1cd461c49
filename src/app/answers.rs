//! Rendered answers of `GET /Users/{id}` and `GET /Groups/{id}` without
//! `attributes` / `excludedAttributes` (RFC 7644 §3.4.1), kept so that a repeated
//! read neither reads the store nor renders (issue 10: a GET by id at 10,000 users
//! at ≥ 0.70 × `/healthz`). Every entry is valid only for the store's change count
//! it was read at (`Store::changes`): any commit of the directory — a user's own
//! change, a group's that changes a member's `groups`, a deletion — empties the
//! cache before its writer is answered, so an answer is never older than the last
//! acknowledged write. The 30-s commit of the server's bookkeeping (tokens' last use,
//! traffic counts) is not a change and keeps it. Bounded in bytes. It owns the bounds and the validity rule; it knows
//! neither HTTP nor redb, and renders nothing itself (directory.rs fills it).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use bytes::Bytes;

use crate::scim::schema::ResourceType;

/// Bytes of answers kept at most (bodies, ETags and ids); an answer that does not
/// fit is served without being kept.
pub(crate) const MAX_BYTES: usize = 16 << 20;

/// Bodies larger than this are never kept (a group's answer with hundreds of
/// members would evict many users' for one resource).
pub(crate) const MAX_ANSWER: usize = 64 << 10;

/// A GET's answer as rendered: its weak ETag and its JSON body.
#[derive(Debug, Clone)]
pub(crate) struct Answer {
    /// `W/"n"` (RFC 7644 §3.14).
    pub version: String,
    /// The representation, as sent.
    pub json: Bytes,
}

/// The cache (one per `App`; two async workers share one lock, held for a hash
/// lookup).
#[derive(Default)]
pub(crate) struct Answers {
    inner: Mutex<Kept>,
    /// GETs answered from the cache since start (`/metrics`).
    hits: AtomicU64,
}

#[derive(Default)]
struct Kept {
    /// The change count every entry was read at.
    changes: u64,
    /// The SCIM base URL the entries' `meta.location` and `$ref`s were written with.
    base: String,
    /// Bytes held (`cost`).
    bytes: usize,
    users: HashMap<String, Answer>,
    groups: HashMap<String, Answer>,
}

impl Kept {
    fn of(&mut self, rt: ResourceType) -> &mut HashMap<String, Answer> {
        match rt {
            ResourceType::User => &mut self.users,
            ResourceType::Group => &mut self.groups,
        }
    }

    /// Forgets everything read before `changes`; `false` when `changes` is older
    /// than the entries (a reader that began before the last write).
    fn at(&mut self, changes: u64) -> bool {
        if changes > self.changes {
            self.users = HashMap::new();
            self.groups = HashMap::new();
            self.bytes = 0;
            self.changes = changes;
        }
        changes == self.changes
    }
}

fn cost(id: &str, a: &Answer) -> usize {
    id.len() + a.version.len() + a.json.len()
}

impl Answers {
    /// The kept answer for `id`, if it was read at `changes` (the store's change
    /// count now) with this `base`.
    pub(crate) fn get(
        &self,
        changes: u64,
        base: &str,
        rt: ResourceType,
        id: &str,
    ) -> Option<Answer> {
        let mut kept = self.inner.lock().ok()?;
        if !kept.at(changes) || kept.base != base {
            return None;
        }
        let found = kept.of(rt).get(id).cloned();
        if found.is_some() {
            self.hits.fetch_add(1, Ordering::Relaxed);
        }
        found
    }

    /// How many GETs were answered from the cache since start (`/metrics`).
    pub(crate) fn hits(&self) -> u64 {
        self.hits.load(Ordering::Relaxed)
    }

    /// Keeps `answer` for `id`, rendered from a snapshot begun after the change
    /// count was `changes`. Nothing is kept when a later change is known already,
    /// when the answer is larger than [`MAX_ANSWER`], or when the cache is full.
    pub(crate) fn put(
        &self,
        changes: u64,
        base: &str,
        rt: ResourceType,
        id: &str,
        answer: &Answer,
    ) {
        if answer.json.len() > MAX_ANSWER {
            return;
        }
        let Ok(mut kept) = self.inner.lock() else {
            return;
        };
        if !kept.at(changes) {
            return;
        }
        if kept.base != base {
            // The base URL is fixed once the server knows it; a change drops the rest.
            *kept = Kept {
                changes,
                base: base.to_owned(),
                ..Kept::default()
            };
        }
        let size = cost(id, answer);
        let old = kept.of(rt).get(id).map_or(0, |o| cost(id, o));
        let bytes = kept.bytes - old + size;
        if bytes > MAX_BYTES {
            return;
        }
        kept.of(rt).insert(id.to_owned(), answer.clone());
        kept.bytes = bytes;
    }

    /// Bytes held (for the tests).
    #[cfg(test)]
    pub(crate) fn bytes(&self) -> usize {
        self.inner.lock().map_or(0, |k| k.bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(n: usize, len: usize) -> Answer {
        Answer {
            version: format!("W/\"{n}\""),
            json: Bytes::from(vec![b'x'; len]),
        }
    }

    #[test]
    fn an_answer_is_served_only_at_the_change_count_and_base_it_was_read_at() {
        let a = Answers::default();
        let base = "https://h/scim/v2";
        a.put(3, base, ResourceType::User, "u1", &answer(1, 10));
        let got = a.get(3, base, ResourceType::User, "u1").unwrap();
        assert_eq!((got.version.as_str(), got.json.len()), ("W/\"1\"", 10));
        // Another type's id space, another base: not this entry.
        assert!(a.get(3, base, ResourceType::Group, "u1").is_none());
        assert!(a
            .get(3, "https://other/scim/v2", ResourceType::User, "u1")
            .is_none());
        // A reader that began before the entry's change count cannot trust it.
        assert!(a.get(2, base, ResourceType::User, "u1").is_none());
        // Any later change empties the cache, and a late put from before it is dropped.
        assert!(a.get(4, base, ResourceType::User, "u1").is_none());
        assert_eq!(a.bytes(), 0);
        a.put(3, base, ResourceType::User, "u1", &answer(1, 10));
        assert!(a.get(4, base, ResourceType::User, "u1").is_none());
        assert_eq!(a.bytes(), 0);
    }

    #[test]
    fn the_cache_is_bounded_in_bytes_and_keeps_no_large_answer() {
        let a = Answers::default();
        let base = "b";
        a.put(
            1,
            base,
            ResourceType::Group,
            "big",
            &answer(1, MAX_ANSWER + 1),
        );
        assert!(a.get(1, base, ResourceType::Group, "big").is_none());
        let each = MAX_ANSWER;
        let mut kept = 0;
        for i in 0..(MAX_BYTES / each + 10) {
            a.put(
                1,
                base,
                ResourceType::User,
                &format!("u{i}"),
                &answer(1, each),
            );
            if a.get(1, base, ResourceType::User, &format!("u{i}"))
                .is_some()
            {
                kept += 1;
            }
        }
        assert!(a.bytes() <= MAX_BYTES, "{} bytes held", a.bytes());
        assert!(kept > 0 && kept < MAX_BYTES / each + 10, "{kept} kept");
        // Replacing an entry does not count it twice.
        let before = a.bytes();
        a.put(1, base, ResourceType::User, "u0", &answer(2, each));
        assert_eq!(a.bytes(), before);
        assert_eq!(
            a.get(1, base, ResourceType::User, "u0").unwrap().version,
            "W/\"2\""
        );
    }
}
