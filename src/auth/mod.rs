//! SCIM bearer tokens: generation (256 bits from the OS), hashing (SHA-256; only the
//! hash is stored) and verification of an `Authorization` header into a `Principal`.
//! Tokens are never logged; `Secret` prints nothing in `Debug`.

pub mod admin;

use base64::Engine;
use ring::rand::SecureRandom;

use crate::clock::Timestamp;
use crate::store::{Scope, Store, StoreError, TokenRecord};

/// The prefix of every token this bridge issues; lets secret scanners recognise them.
pub const TOKEN_PREFIX: &str = "scimb_";

/// A secret that must not end up in logs.
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// The authenticated caller of a SCIM request.
#[derive(Debug, Clone)]
pub struct Principal {
    pub token_id: String,
    pub name: String,
    pub scope: Scope,
}

pub fn hash_secret(secret: &str) -> Vec<u8> {
    ring::digest::digest(&ring::digest::SHA256, secret.as_bytes())
        .as_ref()
        .to_vec()
}

/// Compares two secrets without an early exit on the first differing byte: both
/// are hashed to fixed-length digests, which are compared with a full XOR fold.
pub fn secrets_equal(a: &str, b: &str) -> bool {
    let (x, y) = (hash_secret(a), hash_secret(b));
    x.iter()
        .zip(y.iter())
        .fold(0u8, |acc, (p, q)| acc | (p ^ q))
        == 0
}

/// A fresh token secret and its hash.
pub fn generate_secret() -> Result<(Secret, Vec<u8>), ring::error::Unspecified> {
    let mut bytes = [0u8; 32];
    ring::rand::SystemRandom::new().fill(&mut bytes)?;
    let secret = format!(
        "{TOKEN_PREFIX}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    );
    let hash = hash_secret(&secret);
    Ok((Secret(secret), hash))
}

/// A new token record (not yet stored) and its secret, shown once.
pub fn new_token(
    name: &str,
    scope: Scope,
    now: Timestamp,
    expires: Option<Timestamp>,
) -> Result<(TokenRecord, Secret, Vec<u8>), ring::error::Unspecified> {
    let (secret, hash) = generate_secret()?;
    let record = TokenRecord {
        id: crate::store::new_id(now),
        name: name.to_owned(),
        hash: crate::store::hex(&hash),
        scope,
        created: now,
        expires,
        last_used: None,
        revoked: None,
    };
    Ok((record, secret, hash))
}

/// Why a request was not authenticated. The client only ever learns "invalid".
#[derive(Debug, PartialEq, Eq)]
pub enum AuthFailure {
    Missing,
    Malformed,
    Unknown,
    Revoked,
    Expired,
}

impl AuthFailure {
    pub fn as_str(&self) -> &'static str {
        match self {
            AuthFailure::Missing => "missing",
            AuthFailure::Malformed => "malformed",
            AuthFailure::Unknown => "unknown token",
            AuthFailure::Revoked => "revoked token",
            AuthFailure::Expired => "expired token",
        }
    }
}

/// Verifies an `Authorization` header value against the stored tokens.
pub fn authenticate(
    store: &Store,
    header: Option<&str>,
    now: Timestamp,
) -> Result<Result<Principal, AuthFailure>, StoreError> {
    let Some(header) = header else {
        return Ok(Err(AuthFailure::Missing));
    };
    let mut parts = header.trim().splitn(2, ' ');
    let scheme = parts.next().unwrap_or_default();
    let Some(secret) = parts.next().map(str::trim) else {
        return Ok(Err(AuthFailure::Malformed));
    };
    if !scheme.eq_ignore_ascii_case("bearer") || secret.is_empty() || secret.len() > 512 {
        return Ok(Err(AuthFailure::Malformed));
    }
    let hash = hash_secret(secret);
    // The lookup is by the SHA-256 of the presented secret, so its timing depends on
    // the hash, not on how much of a stored secret the guess shares.
    let Some(record) = store.token_by_hash(&hash)? else {
        return Ok(Err(AuthFailure::Unknown));
    };
    match record.state(now) {
        "revoked" => return Ok(Err(AuthFailure::Revoked)),
        "expired" => return Ok(Err(AuthFailure::Expired)),
        _ => {}
    }
    Ok(Ok(Principal {
        token_id: record.id,
        name: record.name,
        scope: record.scope,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_long_prefixed_and_unique() {
        let (a, ha) = generate_secret().unwrap();
        let (b, _) = generate_secret().unwrap();
        assert!(a.0.starts_with(TOKEN_PREFIX));
        assert_eq!(a.0.len(), TOKEN_PREFIX.len() + 43);
        assert_ne!(a.0, b.0);
        assert_eq!(ha, hash_secret(&a.0));
        assert_eq!(format!("{a:?}"), "Secret(***)");
        assert!(secrets_equal(&a.0, &a.0.clone()));
        assert!(!secrets_equal(&a.0, &b.0));
    }
}
