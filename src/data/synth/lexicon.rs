//! The words of the caption language and the tokenizer shared by the caption
//! generator and the judge, so both always agree on spelling and synonyms.

use super::scene::{Col, Colour, Relation, Row, Shape, Size};

/// Longest reference caption, in words (punctuation not counted).
pub const MAX_CAPTION_WORDS: usize = 25;

/// Words for each shape; the first is the canonical name.
pub(crate) fn shape_words(shape: Shape) -> &'static [&'static str] {
    match shape {
        Shape::Circle => &["circle", "ball"],
        Shape::Square => &["square", "box"],
        Shape::Triangle => &["triangle"],
        Shape::Diamond => &["diamond", "rhombus"],
        Shape::Cross => &["cross"],
    }
}

/// Words for each colour; the first is the canonical name.
pub(crate) fn colour_words(colour: Colour) -> &'static [&'static str] {
    match colour {
        Colour::Red => &["red"],
        Colour::Green => &["green"],
        Colour::Blue => &["blue"],
        Colour::Yellow => &["yellow"],
        Colour::Purple => &["purple", "violet"],
        Colour::Orange => &["orange"],
    }
}

/// Words for each size; the first is the canonical name.
pub(crate) fn size_words(size: Size) -> &'static [&'static str] {
    match size {
        Size::Small => &["small", "little", "tiny"],
        Size::Large => &["large", "big"],
    }
}

/// Phrases for each relation, as token sequences.
pub(crate) fn relation_phrases(relation: Relation) -> &'static [&'static [&'static str]] {
    match relation {
        Relation::LeftOf => &[&["to", "the", "left", "of"], &["left", "of"]],
        Relation::RightOf => &[&["to", "the", "right", "of"], &["right", "of"]],
        Relation::Above => &[&["above"], &["over"]],
        Relation::Below => &[&["below"], &["under"]],
    }
}

/// Count words, "one" to "five" (index + 1 is the number).
pub(crate) const COUNT_WORDS: [&str; 5] = ["one", "two", "three", "four", "five"];
/// Nouns after "one".
pub(crate) const COUNT_NOUNS_SINGULAR: [&str; 2] = ["shape", "object"];
/// Nouns after "two" to "five".
pub(crate) const COUNT_NOUNS_PLURAL: [&str; 2] = ["shapes", "objects"];

/// The phrases that name a grid cell, most specific for that cell, as token
/// sequences: middle-row side cells say only the column ("on the left"),
/// middle-column edge cells only the row ("at the top").
pub(crate) fn position_phrases(row: Row, col: Col) -> Vec<Vec<&'static str>> {
    let row_word = match row {
        Row::Top => "top",
        Row::Middle => "middle",
        Row::Bottom => "bottom",
    };
    let col_word = match col {
        Col::Left => "left",
        Col::Middle => "middle",
        Col::Right => "right",
    };
    match (row, col) {
        (Row::Middle, Col::Middle) => {
            vec![vec!["in", "the", "middle"], vec!["in", "the", "center"]]
        }
        (Row::Middle, _) => vec![vec!["on", "the", col_word]],
        (_, Col::Middle) => vec![vec!["at", "the", row_word]],
        _ => vec![
            vec!["in", "the", row_word, col_word],
            vec!["in", "the", row_word, col_word, "corner"],
        ],
    }
}

pub(crate) fn parse_shape(word: &str) -> Option<Shape> {
    Shape::ALL
        .into_iter()
        .find(|&s| shape_words(s).contains(&word))
}

pub(crate) fn parse_colour(word: &str) -> Option<Colour> {
    Colour::ALL
        .into_iter()
        .find(|&c| colour_words(c).contains(&word))
}

pub(crate) fn parse_size(word: &str) -> Option<Size> {
    Size::ALL
        .into_iter()
        .find(|&s| size_words(s).contains(&word))
}

pub(crate) fn parse_count(word: &str) -> Option<usize> {
    COUNT_WORDS.iter().position(|&w| w == word).map(|i| i + 1)
}

/// Every token the caption generator can emit, sorted and without repeats
/// (53 tokens, including the punctuation tokens `,` and `:`). A captioner's
/// tokenizer can be built from this list alone.
pub fn vocabulary() -> Vec<&'static str> {
    let mut words: Vec<&'static str> = vec![
        "a", "an", "the", "there", "is", "and", ",", ":", "on", "in", "at", "top", "bottom",
        "left", "right", "middle", "center", "corner",
    ];
    words.extend(COUNT_WORDS);
    words.extend(COUNT_NOUNS_SINGULAR);
    words.extend(COUNT_NOUNS_PLURAL);
    for s in Shape::ALL {
        words.extend(shape_words(s));
    }
    for c in Colour::ALL {
        words.extend(colour_words(c));
    }
    for s in Size::ALL {
        words.extend(size_words(s));
    }
    for r in Relation::ALL {
        for phrase in relation_phrases(r) {
            words.extend(phrase.iter().copied());
        }
    }
    words.sort_unstable();
    words.dedup();
    words
}

/// Whether `token` is in [`vocabulary`] (the list is built once).
pub(crate) fn is_known(token: &str) -> bool {
    static VOCABULARY: std::sync::OnceLock<Vec<&'static str>> = std::sync::OnceLock::new();
    VOCABULARY
        .get_or_init(vocabulary)
        .binary_search(&token)
        .is_ok()
}

/// Splits a caption into tokens: lowercased, split on whitespace, with `,`,
/// `:` and `.` split off as tokens of their own (so spacing around punctuation
/// does not matter). Never fails; unknown words are kept as they are.
pub fn tokenize(caption: &str) -> Vec<String> {
    let lower = caption.to_lowercase();
    let mut tokens = Vec::new();
    for chunk in lower.split_whitespace() {
        let mut word = String::new();
        for ch in chunk.chars() {
            if matches!(ch, ',' | ':' | '.') {
                if !word.is_empty() {
                    tokens.push(std::mem::take(&mut word));
                }
                tokens.push(ch.to_string());
            } else {
                word.push(ch);
            }
        }
        if !word.is_empty() {
            tokens.push(word);
        }
    }
    tokens
}

/// Joins tokens into caption text: single spaces, none before `,` `:` `.`.
pub fn detokenize<S: AsRef<str>>(tokens: &[S]) -> String {
    let mut out = String::new();
    for t in tokens {
        let t = t.as_ref();
        if !out.is_empty() && !matches!(t, "," | ":" | ".") {
            out.push(' ');
        }
        out.push_str(t);
    }
    out
}

/// Number of words in a token list (punctuation tokens not counted).
pub(crate) fn word_count<S: AsRef<str>>(tokens: &[S]) -> usize {
    tokens
        .iter()
        .filter(|t| !matches!(t.as_ref(), "," | ":" | "."))
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokenize_splits_punctuation_and_lowercases() {
        assert_eq!(
            tokenize("  Two Shapes: a red circle,a blue box.  "),
            vec!["two", "shapes", ":", "a", "red", "circle", ",", "a", "blue", "box", "."]
        );
        assert!(tokenize("").is_empty());
        assert!(tokenize(" \t\n").is_empty());
    }

    #[test]
    fn detokenize_inverts_tokenize_on_canonical_text() {
        let text = "three shapes: a red circle, a blue box and a green cross";
        assert_eq!(detokenize(&tokenize(text)), text);
    }

    #[test]
    fn words_are_unambiguous_across_categories() {
        for w in vocabulary() {
            let hits = [
                parse_shape(w).is_some(),
                parse_colour(w).is_some(),
                parse_size(w).is_some(),
                parse_count(w).is_some(),
            ];
            assert!(hits.iter().filter(|&&h| h).count() <= 1, "{w}");
        }
        assert_eq!(vocabulary().len(), 53);
    }
}
