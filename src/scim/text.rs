//! How the bridge compares text that is not case-exact (RFC 7643 §2.2 `caseExact:
//! false`): the caseless form of a string is its Unicode NFC form after full case
//! folding (Unicode §3.13, "canonical caseless match"), so `STRASSE` and `straße`, or
//! a precomposed `é` and `e` + combining acute, are one name, while look-alikes from
//! other scripts (a Cyrillic `а` for a Latin `a`) stay distinct, as they are distinct
//! names. Uniqueness (userName), the lookup indexes and filter comparisons all use
//! this one function, so an index and a filter never disagree. Pure; no IO.

use std::borrow::Cow;

use unicode_normalization::UnicodeNormalization;

/// The caseless form of `s`: NFC(casefold(NFD(s))). ASCII text (nearly every
/// userName) takes a fast path that only lowercases.
pub fn caseless(s: &str) -> Cow<'_, str> {
    if s.is_ascii() {
        if s.bytes().any(|b| b.is_ascii_uppercase()) {
            return Cow::Owned(s.to_ascii_lowercase());
        }
        return Cow::Borrowed(s);
    }
    let decomposed: String = s.nfd().collect();
    let folded = caseless::default_case_fold_str(&decomposed);
    Cow::Owned(folded.nfc().collect())
}

/// Whether two strings are equal ignoring case and Unicode normalization form.
pub fn caseless_eq(a: &str, b: &str) -> bool {
    a == b || caseless(a) == caseless(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ascii_is_lowercased_without_allocating_when_already_lower() {
        assert_eq!(caseless("Alice@Example.COM"), "alice@example.com");
        assert!(matches!(caseless("bob"), Cow::Borrowed("bob")));
    }

    #[test]
    fn full_case_folding_and_normalization_forms_are_one_name() {
        assert!(caseless_eq("straße@example.com", "STRASSE@example.com"));
        // Precomposed é (U+00E9) and e + combining acute (U+0301).
        assert!(caseless_eq("Jos\u{e9}", "jose\u{301}"));
        assert!(caseless_eq("\u{c9}LODIE", "\u{e9}lodie"));
        // Greek final sigma folds to sigma.
        assert!(caseless_eq("ΟΔΟΣ", "οδος"));
    }

    #[test]
    fn look_alikes_from_other_scripts_stay_distinct() {
        // Cyrillic а (U+0430) is not Latin a.
        assert!(!caseless_eq("\u{430}lice", "alice"));
        assert!(!caseless_eq("\u{410}LICE", "ALICE"));
        // Compatibility forms are not folded together (NFC, not NFKC).
        assert!(!caseless_eq("\u{2460}", "1"));
    }
}
