//! Names the host owner gives in the agent's config (commands, jail roots): one rule, so a name
//! is valid everywhere or nowhere.

/// 1 to 64 of `a-z 0-9 . _ -`, starting with a letter or digit.
pub fn valid_name(name: &str) -> bool {
    let b = name.as_bytes();
    !b.is_empty()
        && b.len() <= 64
        && (b[0].is_ascii_lowercase() || b[0].is_ascii_digit())
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || b"._-".contains(c))
}

#[cfg(test)]
mod tests {
    use super::valid_name;

    #[test]
    fn names_follow_one_rule() {
        for good in ["www", "a", "0data", "web-1.static_x"] {
            assert!(valid_name(good), "{good}");
        }
        for bad in ["", "Www", "-x", ".x", "a/b", "a b", &"x".repeat(65)] {
            assert!(!valid_name(bad), "{bad}");
        }
    }
}
