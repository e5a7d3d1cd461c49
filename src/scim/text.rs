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

/// The form a person's search is compared in (the admin page's directory search, not
/// SCIM filters): the caseless form without diacritics, so `José` and `jose`, or
/// `Müller` and `MULLER`, read the same. Marks are what Unicode decomposes a letter
/// into (NFD) beyond its base (General_Category Mark); letters that do not decompose
/// (`ø`, `ł`) stay. Pure ASCII takes the fast path of `caseless`.
pub fn search_form(s: &str) -> Cow<'_, str> {
    let folded = caseless(s);
    if folded.is_ascii() {
        return folded;
    }
    Cow::Owned(
        folded
            .nfd()
            .filter(|c| !unicode_normalization::char::is_combining_mark(*c))
            .nfc()
            .collect(),
    )
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
    fn the_search_form_drops_case_and_diacritics_only() {
        assert_eq!(search_form("José"), "jose");
        assert_eq!(search_form("jose\u{301}"), "jose");
        assert_eq!(search_form("MÜLLER"), "muller");
        assert_eq!(search_form("Ångström"), "angstrom");
        assert_eq!(search_form("Straße"), "strasse");
        assert_eq!(search_form("Łódź"), "łodz", "ł has no decomposition");
        assert_eq!(search_form("Ann"), "ann");
        assert!(
            !search_form("\u{430}nn").is_ascii(),
            "Cyrillic stays Cyrillic"
        );
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
