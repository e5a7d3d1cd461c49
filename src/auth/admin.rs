//! Admin-page credentials: the password hash (PBKDF2-HMAC-SHA256 with a random salt,
//! verified in constant time by `ring`), one-time setup codes and the random values
//! behind sessions and CSRF tokens. All randomness comes from `ring::rand::SystemRandom`.
//! Nothing here knows HTTP or where the records are kept.

use std::num::NonZeroU32;

use base64::Engine;
use ring::rand::SecureRandom;

use crate::clock::Timestamp;
use crate::secret::Secret;
use crate::store::{hex, AdminPassword};

/// PBKDF2 rounds for new passwords (OWASP's 2023 figure for HMAC-SHA256).
pub(crate) const PBKDF2_ITERATIONS: u32 = 600_000;
/// Shortest admin password accepted.
pub(crate) const MIN_PASSWORD_CHARS: usize = 12;
/// Longest admin password accepted (bounds the hashing work one request can cause).
pub(crate) const MAX_PASSWORD_BYTES: usize = 1024;
/// How long a setup code stays usable.
pub(crate) const SETUP_CODE_LIFETIME: time::Duration = time::Duration::hours(1);

const ALGORITHM: ring::pbkdf2::Algorithm = ring::pbkdf2::PBKDF2_HMAC_SHA256;

/// `bytes` random bytes, URL-safe base64 without padding.
pub(crate) fn random_string(bytes: usize) -> Result<String, ring::error::Unspecified> {
    let mut buf = vec![0u8; bytes];
    ring::rand::SystemRandom::new().fill(&mut buf)?;
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(buf))
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// Base words of the most common passwords (see the file's header).
const COMMON_PASSWORDS: &str = include_str!("common_passwords.txt");
/// Fewest different characters a new password must have.
pub(crate) const MIN_DISTINCT_CHARS: usize = 6;
/// Rows of keys and runs of characters that people type as "random" passwords.
const SEQUENCES: [&str; 4] = [
    "abcdefghijklmnopqrstuvwxyzabcdefghijklmnopqrstuvwxyz",
    "01234567890123456789012345678901234567890",
    "qwertyuiopasdfghjklzxcvbnmqwertyuiopasdfghjklzxcvbnm",
    "1qaz2wsx3edc4rfv5tgb6yhn7ujm8ik9ol0p",
];

/// The letters of `password`, lower case, with look-alike digits and symbols read
/// as the letters they stand for (`p@ssw0rd` → `password`), the rest dropped.
fn letters(password: &str) -> String {
    password
        .chars()
        .filter_map(|c| match c.to_ascii_lowercase() {
            '@' | '4' => Some('a'),
            '3' => Some('e'),
            '1' | '!' => Some('i'),
            '0' => Some('o'),
            '$' | '5' => Some('s'),
            '7' => Some('t'),
            c if c.is_alphabetic() => Some(c),
            _ => None,
        })
        .collect()
}

/// Whether `text` is one common word, or a few of them, repeated or joined.
fn made_of_common_words(text: &str) -> bool {
    fn split(rest: &str, words: &[&str], depth: usize) -> bool {
        rest.is_empty()
            || (depth < 4
                && words
                    .iter()
                    .any(|w| rest.starts_with(w) && split(&rest[w.len()..], words, depth + 1)))
    }
    let words: Vec<&str> = COMMON_PASSWORDS
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    !text.is_empty() && split(text, &words, 0)
}

/// Whether `text` is made of at most four keyboard or alphabet runs of at least
/// three characters each, forwards or backwards (`qwertyuiop`, `qwerty123`,
/// `asdfzyxw`). Linear in the length: a prefix of a run is a run, so each start
/// extends only while the piece stays one.
fn made_of_runs(text: &str) -> bool {
    fn is_run(piece: &str) -> bool {
        let reversed: String = piece.chars().rev().collect();
        SEQUENCES
            .iter()
            .any(|s| s.contains(piece) || s.contains(reversed.as_str()))
    }
    let chars: Vec<char> = text.chars().collect();
    // fewest[i]: the fewest runs that make up chars[..i].
    let mut fewest = vec![usize::MAX; chars.len() + 1];
    fewest[0] = 0;
    for start in 0..chars.len() {
        if fewest[start] == usize::MAX {
            continue;
        }
        let mut piece = String::new();
        for (end, c) in (start + 1..).zip(&chars[start..]) {
            piece.push(*c);
            if !is_run(&piece) {
                break;
            }
            if end - start >= 3 {
                fewest[end] = fewest[end].min(fewest[start] + 1);
            }
        }
    }
    !chars.is_empty() && fewest[chars.len()] <= 4
}

/// Why a new password is refused, in words for the admin (each names its rule).
/// Beyond the length: not a common password or common words with digits, symbols
/// or look-alikes around them; not a keyboard or alphabet run; not the name of this
/// service; at least `MIN_DISTINCT_CHARS` different characters. (NIST SP 800-63B
/// §3.1.1.2: check new passwords against commonly used and expected values.)
pub(crate) fn password_problem(password: &str, confirm: &str) -> Option<String> {
    if password.chars().count() < MIN_PASSWORD_CHARS {
        return Some(format!(
            "the password must be at least {MIN_PASSWORD_CHARS} characters long"
        ));
    }
    if password.len() > MAX_PASSWORD_BYTES {
        return Some(format!(
            "the password must be at most {MAX_PASSWORD_BYTES} bytes long"
        ));
    }
    if password != confirm {
        return Some("the two passwords differ".into());
    }
    let lower = password.to_lowercase();
    let distinct: std::collections::HashSet<char> = lower.chars().collect();
    if distinct.len() < MIN_DISTINCT_CHARS {
        return Some(format!(
            "the password must use at least {MIN_DISTINCT_CHARS} different characters"
        ));
    }
    if lower.contains("scimbridge") {
        return Some("the password must not contain the name of this service".into());
    }
    // The core between leading and trailing digits/symbols, read with look-alikes
    // (`!P@ssw0rd2024` → `password`), and the letters alone (`Summer2024Winter`).
    let core = password.trim_matches(|c: char| !c.is_alphabetic());
    let only_letters: String = lower.chars().filter(|c| c.is_alphabetic()).collect();
    if made_of_common_words(&letters(core)) || made_of_common_words(&only_letters) {
        return Some(
            "the password is a common password, or common words with digits or symbols added; \
             choose something less predictable, such as four random words"
                .into(),
        );
    }
    let compact: String = lower.chars().filter(|c| c.is_alphanumeric()).collect();
    // `qwertyuiop12`: a run with a couple of digits added is still a run.
    let core = compact.trim_matches(|c: char| c.is_ascii_digit());
    if made_of_runs(&compact) || made_of_runs(core) {
        return Some(
            "the password is a keyboard or alphabet sequence; choose something less predictable"
                .into(),
        );
    }
    None
}

/// Hashes a new password with a fresh random salt. Slow on purpose (hundreds of
/// milliseconds): call it off the async runtime.
pub(crate) fn hash_password(
    password: &str,
    now: Timestamp,
    iterations: u32,
) -> Result<AdminPassword, ring::error::Unspecified> {
    let rounds = NonZeroU32::new(iterations).ok_or(ring::error::Unspecified)?;
    let mut salt = [0u8; 16];
    ring::rand::SystemRandom::new().fill(&mut salt)?;
    let mut out = [0u8; 32];
    ring::pbkdf2::derive(ALGORITHM, rounds, &salt, password.as_bytes(), &mut out);
    Ok(AdminPassword {
        salt: hex(&salt),
        iterations,
        hash: hex(&out),
        set_at: now,
    })
}

/// Whether `password` is the stored one (constant-time comparison inside `ring`).
/// Slow on purpose: call it off the async runtime.
pub(crate) fn verify_password(record: &AdminPassword, password: &str) -> bool {
    let (Some(salt), Some(hash), Some(rounds)) = (
        unhex(&record.salt),
        unhex(&record.hash),
        NonZeroU32::new(record.iterations),
    ) else {
        return false;
    };
    password.len() <= MAX_PASSWORD_BYTES
        && ring::pbkdf2::verify(ALGORITHM, rounds, &salt, password.as_bytes(), &hash).is_ok()
}

/// A new one-time setup code (192 random bits, URL-safe) and the hex SHA-256 that
/// is stored in its place.
pub(crate) fn new_setup_code() -> Result<(Secret, String), ring::error::Unspecified> {
    let code = random_string(24)?;
    let hash = hex(&super::hash_secret(&code));
    Ok((Secret::new(code), hash))
}

/// The hex SHA-256 under which a setup code is stored.
pub(crate) fn setup_code_hash(code: &str) -> String {
    hex(&super::hash_secret(code))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn password_round_trip_and_wrong_password() {
        // Few rounds: the check is about the construction, not the cost.
        let rec = hash_password("correct horse battery", Timestamp::now(), 1000).unwrap();
        assert_eq!(rec.iterations, 1000);
        assert_eq!(rec.salt.len(), 32);
        assert!(verify_password(&rec, "correct horse battery"));
        assert!(!verify_password(&rec, "correct horse batterY"));
        assert!(!verify_password(&rec, ""));
        let again = hash_password("correct horse battery", Timestamp::now(), 1000).unwrap();
        assert_ne!(rec.salt, again.salt, "every password gets a fresh salt");
        assert_ne!(rec.hash, again.hash);
    }

    #[test]
    fn corrupt_record_never_verifies() {
        let mut rec = hash_password("correct horse battery", Timestamp::now(), 1000).unwrap();
        rec.salt = "zz".into();
        assert!(!verify_password(&rec, "correct horse battery"));
        rec.iterations = 0;
        assert!(!verify_password(&rec, "correct horse battery"));
    }

    #[test]
    fn password_rules() {
        assert!(password_problem("short", "short")
            .unwrap()
            .contains("at least 12"));
        assert!(password_problem("long enough pw", "long enough pX")
            .unwrap()
            .contains("differ"));
        assert!(password_problem("long enough pw", "long enough pw").is_none());
        // Characters, not bytes: twelve non-ASCII characters are enough.
        assert!(password_problem("éàüöçñøåæœß", "éàüöçñøåæœß").is_some());
        assert!(password_problem("éàüöçñøåæœßþ", "éàüöçñøåæœßþ").is_none());
    }

    #[test]
    fn common_and_obvious_passwords_are_refused_naming_the_rule() {
        let problem = |p: &str| password_problem(p, p);
        for common in [
            "Password1234!",
            "p@ssw0rd2024",
            "!!Welcome2024",
            "Summer2024Winter",
            "letmeinletmein",
            "adminadmin123",
            "Qwerty123456",
        ] {
            let why = problem(common).unwrap_or_else(|| panic!("{common} accepted"));
            assert!(why.contains("common password"), "{common}: {why}");
        }
        for run in [
            "123456789012",
            "abcdefghijkl",
            "qwertyuiopas",
            "lkjhgfdsapoi",
            // The trial: a run with digits added, and runs put together.
            "qwertyuiop12",
            "12qwertyuiop",
            "poiuyt987654",
            "asdfghzyxwvu",
        ] {
            assert!(problem(run).unwrap().contains("sequence"), "{run}");
        }
        assert!(problem("aaaaaaaaaaaa")
            .unwrap()
            .contains("different characters"));
        assert!(problem("xx-scimbridge-2024")
            .unwrap()
            .contains("name of this service"));
        for fine in [
            "gravel orbit velvet tundra",
            "Vq7#mZ2!pL9x",
            "otter-lantern-quilt-4",
            "827361940257",
        ] {
            assert_eq!(problem(fine), None, "{fine}");
        }
    }

    #[test]
    fn setup_codes_are_long_url_safe_and_stored_hashed() {
        let (a, ha) = new_setup_code().unwrap();
        let (b, _) = new_setup_code().unwrap();
        assert_ne!(a.expose(), b.expose());
        assert!(a.len() >= 22, "at least 128 bits");
        assert!(a
            .expose()
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_'));
        assert_eq!(ha, setup_code_hash(a.expose()));
        assert_ne!(ha, a.expose());
    }
}
