//! METEOR 1.5's `-norm` for English (`edu.cmu.meteor.util.Normalizer.
//! normalizeLine` with punctuation kept, then `String.toLowerCase`): splits
//! punctuation off words, escapes and restores runs of dots, separates commas
//! outside numbers, unifies quotes and dashes, splits English contractions to
//! the right, breaks a word-final dot unless the word is a non-breaking
//! prefix (`english.prefixes`), and collapses white space.
//!
//! Java regexes are replayed with the `regex` crate: every pattern here is a
//! character class or a literal, for which Java's backtracking and `regex`'s
//! leftmost-first search find the same non-overlapping matches. Java's
//! `\p{Digit}`, `\p{Lower}` and `\s` are ASCII-only, so they are written out
//! as ASCII classes.

use std::collections::HashMap;

use regex::Regex;

use super::java;

/// METEOR's letters: Latin-1/Latin Extended-A subsets and Cyrillic blocks,
/// exactly the ranges of `Normalizer.alpha`.
const ALPHA: &str =
    "A-Za-z\u{160}\u{17D}\u{161}\u{17E}\u{178}\u{C0}-\u{D6}\u{D8}-\u{F6}\u{F8}-\u{17E}\
\u{400}-\u{4FF}\u{500}-\u{527}\u{A640}-\u{A66E}\u{A67E}-\u{A697}\u{1D00}-\u{1D7F}";

/// Left and right single quotation marks (U+2018, U+2019).
const QUOTES: &str = "\u{2018}\u{2019}";

/// How a non-breaking prefix keeps its dot (`english.prefixes`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Prefix {
    /// The dot always stays (`Mr.`).
    Any,
    /// The dot stays only before a number (`No. 5`; `#NUMERIC_ONLY#`).
    NumericOnly,
}

/// Parses a non-breaking prefix file as `Normalizer.nbpList` does: first
/// token of each line; lines starting with `#` and blank lines skipped; a
/// second token `#NUMERIC_ONLY#` makes the prefix numeric-only.
pub(crate) fn parse_prefixes(text: &str) -> HashMap<String, Prefix> {
    let mut out = HashMap::new();
    for line in text.lines() {
        let mut toks = java::tokens(line);
        let Some(pre) = toks.next() else { continue };
        if pre.starts_with('#') {
            continue;
        }
        let kind = match toks.next() {
            Some("#NUMERIC_ONLY#") => Prefix::NumericOnly,
            _ => Prefix::Any,
        };
        out.insert(pre.to_string(), kind);
    }
    out
}

/// The compiled English normalizer.
#[derive(Debug)]
pub(crate) struct Normalizer {
    prefixes: HashMap<String, Prefix>,
    sep_other: Regex,
    multi_dot: Regex,
    multi_dot2: Regex,
    comma: Regex,
    comma2: Regex,
    comma3: Regex,
    quote: Regex,
    quote2: Regex,
    rm_dash: Regex,
    cont1: Regex,
    cont2: Regex,
    cont3: Regex,
    cont4: Regex,
    cont5: Regex,
    has_alpha: Regex,
    white: Regex,
}

/// Replaces every match of `re` in `w` by `with` (`replaceAll`), copying
/// only when something matched.
fn replace(w: &mut String, re: &Regex, with: &str) {
    if let std::borrow::Cow::Owned(s) = re.replace_all(w, with) {
        *w = s;
    }
}

fn re(pattern: &str) -> Regex {
    // The patterns are constants of this file; a failure is a bug here.
    Regex::new(pattern).expect("METEOR normalizer pattern")
}

impl Normalizer {
    /// Builds the normalizer with the given non-breaking prefixes.
    pub(crate) fn new(prefixes: HashMap<String, Prefix>) -> Self {
        let alnum = format!("0-9{ALPHA}");
        Normalizer {
            prefixes,
            sep_other: re(&format!(r"([^{alnum} \t\n\x0B\x0C\r.'`,\-{QUOTES}])")),
            multi_dot: re(r"\.(\.+)"),
            multi_dot2: re(r"DOTMULTI\.([^.])"),
            comma: re(r"([^0-9]),([^0-9])"),
            comma2: re(r"([0-9]),([^0-9])"),
            comma3: re(r"([^0-9]),([0-9])"),
            quote: re("[`\u{2018}\u{2019}]"),
            quote2: re("(?:[\u{201C}\u{201D}]|'')"),
            rm_dash: re(&format!(r"([{alnum}.])-([{alnum}])")),
            cont1: re(&format!("([^{ALPHA}])'([^{ALPHA}])")),
            cont2: re(&format!("([^{ALPHA}0-9])'([{ALPHA}])")),
            cont3: re(&format!("([{ALPHA}])'([^{ALPHA}])")),
            cont4: re(&format!("([{ALPHA}])'([{ALPHA}])")),
            cont5: re("([0-9])'(s)"),
            has_alpha: re(&format!("[{ALPHA}]")),
            white: re("[ \u{2000}-\u{200A}\u{202F}\u{205F}\u{3000}\u{A0}]+"),
        }
    }

    /// `normalizeLine(line, LANG_EN, keepPunctuation = true)` followed by
    /// `toLowerCase()`: the text METEOR aligns (tokens separated by spaces).
    pub(crate) fn normalize(&self, line: &str) -> String {
        let mut w = format!(" {line} ");
        // Each pattern below needs the character tested before it, so it
        // is skipped (same result, no search) when the text has none.
        replace(&mut w, &self.sep_other, " ${1} ");
        // Escape runs of dots so that they survive dot splitting.
        if w.contains("..") {
            replace(&mut w, &self.multi_dot, " DOTMULTI${1}");
        }
        while w.contains("DOTMULTI.") {
            replace(&mut w, &self.multi_dot2, "DOTDOTMULTI ${1}");
            w = w.replace("DOTMULTI.", "DOTDOTMULTI");
        }
        // Commas, except within numbers.
        if w.contains(',') {
            replace(&mut w, &self.comma, "${1} , ${2}");
            replace(&mut w, &self.comma2, "${1} , ${2}");
            replace(&mut w, &self.comma3, "${1} , ${2}");
        }
        // Quotes and dashes.
        if !w.is_ascii() || w.contains('`') {
            replace(&mut w, &self.quote, "'");
        }
        if !w.is_ascii() || w.contains("''") {
            replace(&mut w, &self.quote2, " \" ");
        }
        if w.contains('\u{2013}') {
            w = w.replace('\u{2013}', "-");
        }
        if w.contains('-') {
            w = w.replace("--", "-");
            replace(&mut w, &self.rm_dash, "${1} ${2}");
        }
        // English contractions split to the right.
        if w.contains('\'') {
            replace(&mut w, &self.cont1, "${1} ' ${2}");
            replace(&mut w, &self.cont2, "${1} ' ${2}");
            replace(&mut w, &self.cont3, "${1} ' ${2}");
            replace(&mut w, &self.cont4, "${1} '${2}");
            replace(&mut w, &self.cont5, "${1} '${2}");
        }
        // Word-final dots, unless non-breaking.
        let words: Vec<&str> = java::tokens(&w).collect();
        let mut sb = String::with_capacity(w.len() + 8);
        for (i, word) in words.iter().enumerate() {
            let next = words.get(i + 1);
            if java::utf16_len(word) > 1 && word.ends_with('.') {
                let pre = &word[..word.len() - 1];
                let kind = self.prefixes.get(pre).copied();
                if pre.contains('.') && self.has_alpha.is_match(pre) {
                    // U.S. -> US
                    sb.push_str(&word.replace('.', ""));
                } else if kind == Some(Prefix::Any)
                    // Before a lower-case word (catches unlisted `Inc.`).
                    || next.is_some_and(|n| n.starts_with(|c: char| c.is_ascii_lowercase()))
                    || (kind == Some(Prefix::NumericOnly)
                        && next.is_some_and(|n| n.starts_with(|c: char| c.is_ascii_digit())))
                {
                    sb.push_str(word);
                } else {
                    sb.push_str(pre);
                    sb.push_str(" .");
                }
            } else {
                sb.push_str(word);
            }
            sb.push(' ');
        }
        w = sb;
        while w.contains("DOTDOTMULTI") {
            w = w.replace("DOTDOTMULTI", "DOTMULTI.");
        }
        if w.contains("DOTMULTI") {
            w = w.replace("DOTMULTI", ".");
        }
        let w = self.white.replace_all(&w, " ");
        java::trim(&w).to_lowercase()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn norm() -> Normalizer {
        Normalizer::new(parse_prefixes("# comment\nMr\nNo #NUMERIC_ONLY#\n\nSt\n"))
    }

    // Expected strings: `java -cp meteor-1.5.jar edu.cmu.meteor.util.Normalizer
    // en true` on the same inputs (English prefixes), lowercased.
    #[test]
    fn splits_punctuation_and_contractions() {
        let n = norm();
        assert_eq!(n.normalize("Isn't it?"), "isn 't it ?");
        assert_eq!(n.normalize("a (b) c..."), "a ( b ) c ...");
        assert_eq!(n.normalize("1,000 a,b"), "1,000 a , b");
        assert_eq!(n.normalize("well-known"), "well known");
    }

    #[test]
    fn dots_follow_prefixes() {
        let n = norm();
        assert_eq!(n.normalize("Mr. Smith"), "mr. smith");
        assert_eq!(n.normalize("No. 5"), "no. 5");
        assert_eq!(n.normalize("No. Five"), "no . five");
        assert_eq!(n.normalize("the U.S. end."), "the us end .");
    }
}
