//! Counts in the admin's words: "1 user has", "3 users have". Every message that puts a
//! number before a noun (the readiness report, the admin page, the CLI's summaries)
//! goes through `count`, so no reader sees "1 users". Knows nothing but English nouns.

/// `n` and the phrase, singular for exactly one: `count(1, "user has", "users have")`
/// is "1 user has", `count(0, …)` and `count(2, …)` take the plural ("0 users have").
pub(crate) fn count(n: impl Into<u64>, one: &str, many: &str) -> String {
    let n = n.into();
    format!("{n} {}", if n == 1 { one } else { many })
}

#[cfg(test)]
mod tests {
    use super::count;

    #[test]
    fn one_is_singular_zero_and_many_are_plural() {
        assert_eq!(count(1u64, "user has", "users have"), "1 user has");
        assert_eq!(count(0u64, "user has", "users have"), "0 users have");
        assert_eq!(count(2u32, "member", "members"), "2 members");
    }
}
