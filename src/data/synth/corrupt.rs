//! Controlled corruptions of a true caption: the hard negatives that show whether
//! a learned evaluator prefers true, fluent captions the way the oracle does.
//!
//! Each corruption changes one thing (a colour, a shape, a relation, a position,
//! the word order, a repeated phrase, a cut) and is kept only if the oracle's
//! verdict really gets worse: a factual swap must stay grammatical and lower the
//! precision, a fluency corruption must make the caption ungrammatical. When no
//! such change exists for a caption (no relation to swap, a caption that every
//! cut leaves grammatical), [`corrupt`] returns `None` and the caller counts the
//! image as impossible for that kind instead of scoring a caption the oracle
//! would not rank lower.

use super::lexicon::{
    colour_words, detokenize, parse_colour, parse_shape, position_phrases, shape_words, tokenize,
};
use super::oracle::judge;
use super::scene::{Col, Colour, Row, Scene, Shape};
use crate::rng::Rng;

/// The kinds of corruption, in report order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Corruption {
    /// One colour word replaced by another colour (grammatical, less precise).
    Colour,
    /// One shape word replaced by another shape (grammatical, less precise).
    Shape,
    /// One relation turned around: above ↔ below, left of ↔ right of.
    Relation,
    /// One position phrase replaced by another cell's ("on the left" → "at the top").
    Position,
    /// The tokens shuffled (ungrammatical).
    WordOrder,
    /// A span of 2–4 words repeated right after itself (ungrammatical).
    Repeat,
    /// The caption cut short (ungrammatical).
    Truncate,
}

impl Corruption {
    /// Every kind, in report order.
    pub const ALL: [Corruption; 7] = [
        Corruption::Colour,
        Corruption::Shape,
        Corruption::Relation,
        Corruption::Position,
        Corruption::WordOrder,
        Corruption::Repeat,
        Corruption::Truncate,
    ];

    /// Stable label for reports.
    pub fn name(self) -> &'static str {
        match self {
            Corruption::Colour => "colour",
            Corruption::Shape => "shape",
            Corruption::Relation => "relation",
            Corruption::Position => "position",
            Corruption::WordOrder => "word_order",
            Corruption::Repeat => "repeat",
            Corruption::Truncate => "truncate",
        }
    }

    /// Whether the corruption changes facts (and must keep the caption grammatical)
    /// rather than fluency.
    pub fn is_factual(self) -> bool {
        matches!(
            self,
            Corruption::Colour | Corruption::Shape | Corruption::Relation | Corruption::Position
        )
    }
}

/// Most candidate corruptions tried per call (word order draws, spans, cuts).
const TRIES: usize = 64;

/// A corruption of `caption` (a caption of `scene`) of the given kind whose oracle
/// verdict is worse than the original's: for a factual kind, still grammatical with
/// a lower precision; for a fluency kind, ungrammatical while the original was
/// grammatical. `None` when no such corruption exists or none was found within the
/// tries. Deterministic for a given `rng` state.
pub fn corrupt(scene: &Scene, caption: &str, kind: Corruption, rng: &mut Rng) -> Option<String> {
    let original = judge(scene, caption);
    let tokens = tokenize(caption);
    if tokens.is_empty() {
        return None;
    }
    let worse = |candidate: &[String]| -> Option<String> {
        let text = detokenize(candidate);
        if text == caption {
            return None;
        }
        let j = judge(scene, &text);
        let ok = if kind.is_factual() {
            j.grammatical && j.precision < original.precision
        } else {
            original.grammatical && !j.grammatical
        };
        ok.then_some(text)
    };
    let candidates: Vec<Vec<String>> = match kind {
        Corruption::Colour => colour_swaps(&tokens),
        Corruption::Shape => shape_swaps(&tokens),
        Corruption::Relation => relation_swaps(&tokens),
        Corruption::Position => position_swaps(&tokens),
        Corruption::WordOrder => (0..TRIES)
            .map(|_| {
                let mut t = tokens.clone();
                rng.shuffle(&mut t);
                t
            })
            .collect(),
        Corruption::Repeat => {
            let mut out = Vec::new();
            for n in 2..=4 {
                for i in 0..tokens.len().saturating_sub(n - 1) {
                    let mut t = tokens[..i + n].to_vec();
                    t.extend_from_slice(&tokens[i..]);
                    out.push(t);
                }
            }
            out
        }
        Corruption::Truncate => (1..tokens.len())
            .map(|keep| tokens[..keep].to_vec())
            .collect(),
    };
    let mut order: Vec<usize> = (0..candidates.len()).collect();
    rng.shuffle(&mut order);
    order
        .into_iter()
        .take(if kind == Corruption::WordOrder {
            TRIES
        } else {
            usize::MAX
        })
        .find_map(|i| {
            // A swapped word takes the article it needs ("a red" → "an orange");
            // the fluency corruptions keep the words they have.
            if kind.is_factual() {
                worse(&fix_articles(candidates[i].clone()))
            } else {
                worse(&candidates[i])
            }
        })
}

/// Every caption with one colour word replaced by the name of another colour.
fn colour_swaps(tokens: &[String]) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    for (i, t) in tokens.iter().enumerate() {
        let Some(colour) = parse_colour(t) else {
            continue;
        };
        for other in Colour::ALL.into_iter().filter(|&c| c != colour) {
            let mut c = tokens.to_vec();
            c[i] = colour_words(other)[0].to_owned();
            out.push(c);
        }
    }
    out
}

/// Every caption with one shape word replaced by the name of another shape.
fn shape_swaps(tokens: &[String]) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    for (i, t) in tokens.iter().enumerate() {
        let Some(shape) = parse_shape(t) else {
            continue;
        };
        for other in Shape::ALL.into_iter().filter(|&s| s != shape) {
            let mut c = tokens.to_vec();
            c[i] = shape_words(other)[0].to_owned();
            out.push(c);
        }
    }
    out
}

/// Every caption with one relation turned around.
fn relation_swaps(tokens: &[String]) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    for (i, t) in tokens.iter().enumerate() {
        let next_is_of = tokens.get(i + 1).is_some_and(|n| n == "of");
        let swapped = match t.as_str() {
            "above" | "over" => "below",
            "below" | "under" => "above",
            "left" if next_is_of => "right",
            "right" if next_is_of => "left",
            _ => continue,
        };
        let mut c = tokens.to_vec();
        c[i] = swapped.to_owned();
        out.push(c);
    }
    out
}

/// Every caption with one position phrase ("in the top left corner", "on the
/// right", "at the bottom", "in the middle") replaced by a phrase of another cell.
fn position_swaps(tokens: &[String]) -> Vec<Vec<String>> {
    const PLACE: [&str; 6] = ["top", "bottom", "left", "right", "middle", "center"];
    let mut phrases: Vec<Vec<&'static str>> = Vec::new();
    for row in [Row::Top, Row::Middle, Row::Bottom] {
        for col in [Col::Left, Col::Middle, Col::Right] {
            phrases.extend(position_phrases(row, col));
        }
    }
    let mut out = Vec::new();
    for i in 0..tokens.len() {
        let starts = matches!(tokens[i].as_str(), "in" | "on" | "at")
            && tokens.get(i + 1).is_some_and(|t| t == "the")
            && tokens
                .get(i + 2)
                .is_some_and(|t| PLACE.contains(&t.as_str()));
        if !starts {
            continue;
        }
        let mut end = i + 2;
        while end < tokens.len() && PLACE.contains(&tokens[end].as_str()) {
            end += 1;
        }
        if tokens.get(end).is_some_and(|t| t == "corner") {
            end += 1;
        }
        if tokens.get(end).is_some_and(|t| t == "of") {
            continue;
        }
        for p in &phrases {
            if tokens[i..end]
                .iter()
                .map(String::as_str)
                .eq(p.iter().copied())
            {
                continue;
            }
            let mut c = tokens[..i].to_vec();
            c.extend(p.iter().map(|w| (*w).to_owned()));
            c.extend_from_slice(&tokens[end..]);
            out.push(c);
        }
    }
    out
}

/// Makes every indefinite article agree with the word after it.
fn fix_articles(mut tokens: Vec<String>) -> Vec<String> {
    for i in 0..tokens.len().saturating_sub(1) {
        if tokens[i] == "a" || tokens[i] == "an" {
            let vowel = tokens[i + 1].starts_with(['a', 'e', 'i', 'o', 'u']);
            tokens[i] = if vowel { "an" } else { "a" }.to_owned();
        }
    }
    tokens
}
