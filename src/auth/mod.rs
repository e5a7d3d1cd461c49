//! SCIM bearer tokens: generation (256 bits from the OS), hashing (SHA-256; only the
//! hash is stored) and verification of an `Authorization` header into a `Principal`.
//! Tokens are never logged: a secret is a `crate::secret::Secret`.

pub(crate) mod admin;

use base64::Engine;
use ring::rand::SecureRandom;

use crate::clock::Timestamp;
use crate::secret::Secret;
use crate::store::{Scope, Store, StoreError, TokenRecord, TokenState};

/// The prefix of every token this bridge issues; lets secret scanners recognise them.
pub(crate) const TOKEN_PREFIX: &str = "scimb_";

/// The authenticated caller of a SCIM request.
#[derive(Debug, Clone)]
pub(crate) struct Principal {
    pub token_id: String,
    pub name: String,
    pub scope: Scope,
    /// SHA-256 of the secret it authenticated with, to re-check the token during
    /// long work (`still_valid`).
    secret_hash: Vec<u8>,
}

/// Whether the token `p` authenticated with is still unrevoked and unexpired. Long
/// work (a Bulk request) asks between operations, so a revocation stops it at the
/// next operation rather than when it ends. Served from the token cache, which
/// issue and revoke invalidate.
pub(crate) fn still_valid(
    store: &Store,
    p: &Principal,
    now: Timestamp,
) -> Result<bool, StoreError> {
    Ok(store
        .token_by_hash(&p.secret_hash)?
        .is_some_and(|r| r.id == p.token_id && r.state(now).accepted()))
}

pub(crate) fn hash_secret(secret: &str) -> Vec<u8> {
    ring::digest::digest(&ring::digest::SHA256, secret.as_bytes())
        .as_ref()
        .to_vec()
}

/// A fresh token secret and its hash.
pub(crate) fn generate_secret() -> Result<(Secret, Vec<u8>), ring::error::Unspecified> {
    let mut bytes = [0u8; 32];
    ring::rand::SystemRandom::new().fill(&mut bytes)?;
    let secret = format!(
        "{TOKEN_PREFIX}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    );
    let hash = hash_secret(&secret);
    Ok((Secret::new(secret), hash))
}

/// A new token record (not yet stored) and its secret, shown once.
pub(crate) fn new_token(
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
        superseded: None,
        quiet_after_minutes: None,
    };
    Ok((record, secret, hash))
}

/// Why a request was not authenticated. The client only ever learns "invalid"; the
/// admin's dashboard learns which token a revoked or expired secret belonged to
/// (recognised by its hash), so it can say which identity provider still sends it.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum AuthFailure {
    Missing,
    Malformed,
    /// `Authorization: Bearer Bearer <secret>`: the identity provider's token field
    /// holds "Bearer " before the secret (a common misconfiguration). Named apart, as
    /// "unknown token" would send the admin looking for the wrong mistake. `of` is the
    /// name of the token whose secret follows, if one has it (the request is refused
    /// either way: the header is wrong).
    DoubledScheme {
        of: Option<String>,
    },
    Unknown,
    /// A revoked secret of the token (id, name).
    Revoked {
        id: String,
        name: String,
    },
    /// An expired secret of the token (id, name).
    Expired {
        id: String,
        name: String,
    },
}

impl AuthFailure {
    pub(crate) fn as_str(&self) -> &'static str {
        match self {
            AuthFailure::Missing => "missing",
            AuthFailure::Malformed => "malformed",
            AuthFailure::DoubledScheme { .. } => "bearer twice",
            AuthFailure::Unknown => "unknown token",
            AuthFailure::Revoked { .. } => "revoked token",
            AuthFailure::Expired { .. } => "expired token",
        }
    }

    /// Why, in the words of the log and the audit: `as_str`, except for a doubled
    /// scheme, which says what is wrong with the header.
    pub(crate) fn explained(&self) -> &'static str {
        match self {
            AuthFailure::DoubledScheme { .. } => DOUBLED_SCHEME,
            other => other.as_str(),
        }
    }
}

/// What the log, the audit and the client are told about `Bearer Bearer <secret>`.
pub(crate) const DOUBLED_SCHEME: &str = "the Authorization header says Bearer twice";

/// For a credential after `Bearer ` that itself starts with the word `Bearer`, what
/// follows that word (trimmed, perhaps empty).
fn after_doubled_scheme(credential: &str) -> Option<&str> {
    let (first, rest) = credential
        .split_once(|c: char| c.is_ascii_whitespace())
        .unwrap_or((credential, ""));
    first.eq_ignore_ascii_case("bearer").then(|| rest.trim())
}

/// Verifies an `Authorization` header value against the stored tokens.
pub(crate) fn authenticate(
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
    if let Some(rest) = after_doubled_scheme(secret) {
        let of = match rest.is_empty() || rest.len() > 512 {
            true => None,
            false => store.token_by_hash(&hash_secret(rest))?.map(|r| r.name),
        };
        return Ok(Err(AuthFailure::DoubledScheme { of }));
    }
    let hash = hash_secret(secret);
    // The lookup is by the SHA-256 of the presented secret, so its timing depends on
    // the hash, not on how much of a stored secret the guess shares.
    let Some(record) = store.token_by_hash(&hash)? else {
        return Ok(Err(AuthFailure::Unknown));
    };
    match record.state(now) {
        TokenState::Revoked => {
            let (id, name) = (record.id, record.name);
            return Ok(Err(AuthFailure::Revoked { id, name }));
        }
        TokenState::Expired => {
            let (id, name) = (record.id, record.name);
            return Ok(Err(AuthFailure::Expired { id, name }));
        }
        // A superseded secret works until it is revoked (`token rotate`).
        TokenState::Active | TokenState::Superseded => {}
    }
    Ok(Ok(Principal {
        secret_hash: hash,
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
        assert!(a.expose().starts_with(TOKEN_PREFIX));
        assert_eq!(a.len(), TOKEN_PREFIX.len() + 43);
        assert_ne!(a.expose(), b.expose());
        assert_eq!(ha, hash_secret(a.expose()));
        assert_eq!(format!("{a:?}"), "Secret(***)");
        assert!(a.matches(a.expose()));
        assert!(!a.matches(b.expose()));
    }

    #[test]
    fn a_doubled_scheme_is_recognised_in_any_case_and_spacing() {
        assert_eq!(after_doubled_scheme("Bearer scimb_x"), Some("scimb_x"));
        assert_eq!(after_doubled_scheme("bearer   scimb_x "), Some("scimb_x"));
        assert_eq!(after_doubled_scheme("BEARER\tscimb_x"), Some("scimb_x"));
        assert_eq!(after_doubled_scheme("Bearer"), Some(""));
        assert_eq!(after_doubled_scheme("scimb_x"), None);
        assert_eq!(after_doubled_scheme("Bearerscimb_x"), None);
    }
}
