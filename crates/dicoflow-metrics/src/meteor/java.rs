//! The few `java.lang.String` / `java.util` behaviours METEOR 1.5's results
//! depend on, so that the port sees its input exactly as the jar does.

/// `String.hashCode()`: `s[0]·31^(n−1) + … + s[n−1]` over UTF-16 code units,
/// wrapping in 32 bits. METEOR compares words (and stems) by this key, not by
/// the strings, so two different words with the same hash match as exact;
/// using the same key keeps even that behaviour.
pub(crate) fn hash_code(s: &str) -> i32 {
    s.encode_utf16()
        .fold(0i32, |h, c| h.wrapping_mul(31).wrapping_add(i32::from(c)))
}

/// `String.length()`: the number of UTF-16 code units.
pub(crate) fn utf16_len(s: &str) -> usize {
    s.chars().map(char::len_utf16).sum()
}

/// `String.trim()`: strips every char `<= U+0020` from both ends (not only
/// Unicode white space).
pub(crate) fn trim(s: &str) -> &str {
    s.trim_matches(|c: char| c <= ' ')
}

/// `new StringTokenizer(s)`: tokens separated by any of `" \t\n\r\f"`.
pub(crate) fn tokens(s: &str) -> impl Iterator<Item = &str> {
    s.split([' ', '\t', '\n', '\r', '\x0C'])
        .filter(|t| !t.is_empty())
}

/// `line.split("\\|\\|\\|")`: pieces between non-overlapping `|||` (leftmost
/// first), with trailing empty pieces removed.
pub(crate) fn split_triple_bar(line: &str) -> Vec<&str> {
    if !line.contains("|||") {
        // No match: the input itself, even if empty.
        return vec![line];
    }
    let mut parts: Vec<&str> = line.split("|||").collect();
    while parts.last().is_some_and(|p| p.is_empty()) {
        parts.pop();
    }
    parts
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_code_is_javas() {
        // Values of "…".hashCode() in Java.
        assert_eq!(hash_code(""), 0);
        assert_eq!(hash_code("a"), 97);
        assert_eq!(hash_code("hello"), 99162322);
        assert_eq!(hash_code("the quick brown fox"), 1_302_335_171);
        assert_eq!(hash_code("café 東京"), 547_591_098);
        // Classic collision: "Aa" and "BB".
        assert_eq!(hash_code("Aa"), hash_code("BB"));
    }

    #[test]
    fn split_drops_trailing_empties_only() {
        assert_eq!(
            split_triple_bar("SCORE ||| a ||| "),
            vec!["SCORE ", " a ", " "]
        );
        assert_eq!(split_triple_bar("SCORE ||| a |||"), vec!["SCORE ", " a "]);
        assert_eq!(split_triple_bar("||||||x"), vec!["", "", "x"]);
        assert_eq!(split_triple_bar("a ||||b"), vec!["a ", "|b"]);
        assert_eq!(split_triple_bar(""), vec![""]);
        assert!(split_triple_bar("||||||").is_empty());
    }

    #[test]
    fn trim_and_tokens_follow_java() {
        assert_eq!(trim("\u{1}\t a b \u{0B}"), "a b");
        assert_eq!(trim("\u{a0}a"), "\u{a0}a");
        let t: Vec<&str> = tokens(" a\tb\u{0B}c  d\r\n").collect();
        assert_eq!(t, vec!["a", "b\u{0B}c", "d"]);
    }
}
