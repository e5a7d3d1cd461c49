//! `Secret`: the one type for every secret the bridge holds in memory — SCIM token
//! secrets, the metrics token, the migration target's token, admin setup codes. It
//! prints `***` in `Debug` and `Display` (so neither a log line nor an error message
//! can carry it) and has no `Serialize`: a secret is written out only through a field
//! that says so with `#[serde(with = "crate::secret::exposed")]` (the control wire's
//! newly issued token and push target token, the stored migration target token).
//! Knows nothing else of the program.

use std::fmt;

/// A secret string. Compare with [`Secret::matches`] (constant time), show with
/// [`Secret::expose`] only where the user is meant to see it.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub(crate) fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    /// The secret itself, for the one place that must use it (an Authorization
    /// header, the line that shows a new token once).
    pub(crate) fn expose(&self) -> &str {
        &self.0
    }

    /// Whether `given` equals the secret (see [`equal`]: constant time).
    pub(crate) fn matches(&self, given: &str) -> bool {
        equal(&self.0, given)
    }

    /// Length in bytes (for rules such as "at least 16 characters").
    pub(crate) fn len(&self) -> usize {
        self.0.len()
    }

    /// True for an empty secret (a blank token file, say).
    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// Compares two secret values without an early exit: both are hashed (SHA-256) to
/// fixed-length digests, which are compared with a full XOR fold, so the time taken
/// says nothing about where they differ. For secrets kept as plain strings by their
/// owner (session CSRF tokens).
pub(crate) fn equal(a: &str, b: &str) -> bool {
    let digest = |s: &str| ring::digest::digest(&ring::digest::SHA256, s.as_bytes());
    let (x, y) = (digest(a), digest(b));
    x.as_ref()
        .iter()
        .zip(y.as_ref())
        .fold(0u8, |acc, (p, q)| acc | (p ^ q))
        == 0
}

/// Reading a secret (from the config file or the control wire) cannot leak it.
impl<'de> serde::Deserialize<'de> for Secret {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Secret, D::Error> {
        String::deserialize(d).map(Secret)
    }
}

/// `#[serde(with = "crate::secret::exposed")]` on a `Secret` field: the one way to
/// write a secret out, so every place that does is marked.
pub(crate) mod exposed {
    use super::Secret;

    /// Writes the secret in clear.
    pub(crate) fn serialize<S: serde::Serializer>(s: &Secret, ser: S) -> Result<S::Ok, S::Error> {
        ser.serialize_str(s.expose())
    }

    /// Reads a secret.
    pub(crate) fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Secret, D::Error> {
        serde::Deserialize::deserialize(d)
    }
}

/// `exposed` for an `Option<Secret>` field.
pub(crate) mod exposed_opt {
    use super::Secret;

    /// Writes the secret in clear, or `null`.
    pub(crate) fn serialize<S: serde::Serializer>(
        s: &Option<Secret>,
        ser: S,
    ) -> Result<S::Ok, S::Error> {
        match s {
            Some(s) => ser.serialize_some(s.expose()),
            None => ser.serialize_none(),
        }
    }

    /// Reads an optional secret.
    pub(crate) fn deserialize<'de, D: serde::Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Secret>, D::Error> {
        serde::Deserialize::deserialize(d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_printed() {
        let s = Secret::new("scimb_very_secret");
        assert_eq!(format!("{s:?}"), "Secret(***)");
        assert_eq!(format!("{s}"), "***");
        assert_eq!(format!("{:?}", Some(&s)), "Some(Secret(***))");
        assert_eq!(s.expose(), "scimb_very_secret");
    }

    #[test]
    fn written_only_through_a_marked_field() {
        #[derive(serde::Serialize, serde::Deserialize)]
        struct Wire {
            #[serde(with = "exposed")]
            token: Secret,
            #[serde(with = "exposed_opt", default)]
            maybe: Option<Secret>,
        }
        let w = Wire {
            token: Secret::new("abc"),
            maybe: None,
        };
        let text = serde_json::to_string(&w).unwrap();
        assert_eq!(text, r#"{"token":"abc","maybe":null}"#);
        let back: Wire = serde_json::from_str(r#"{"token":"abc","maybe":"x"}"#).unwrap();
        assert_eq!(back.token, Secret::new("abc"));
        assert_eq!(back.maybe, Some(Secret::new("x")));
    }

    #[test]
    fn matches_compares_the_whole_value() {
        let s = Secret::new("0123456789abcdef");
        assert!(s.matches("0123456789abcdef"));
        assert!(!s.matches("0123456789abcdeF"));
        assert!(!s.matches(""));
    }
}
