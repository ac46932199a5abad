//! Reference captions: a small paraphrasing grammar over a scene.
//!
//! Every caption is true of its scene and grammatical by construction; the
//! variety (four sentence forms, synonyms, optional sizes, positions or
//! relations, clause order) is what a captioner must learn to compress into
//! fluent, correct output. See `datasets/synthetic_world.md` for the grammar.

use super::lexicon::{
    colour_words, detokenize, position_phrases, relation_phrases, shape_words, size_words,
    word_count, COUNT_NOUNS_PLURAL, COUNT_NOUNS_SINGULAR, COUNT_WORDS, MAX_CAPTION_WORDS,
};
use super::scene::Scene;
use crate::rng::Rng;

/// Chance that a caption describes only some of the objects (scenes with two
/// or more objects), as human references often do.
pub const PARTIAL_PROBABILITY: f64 = 0.1;
/// Chance that a noun phrase states the object's size.
pub const SIZE_PROBABILITY: f64 = 0.4;
/// Chance that a clause relates its object to another one instead of giving
/// its position (when another object is available).
pub const RELATION_PROBABILITY: f64 = 0.5;
/// Chance that a clause of a plain, "there is" or counted caption names the
/// object without a position.
pub const BARE_PROBABILITY: f64 = 0.1;

/// The sentence form of a caption.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Form {
    /// "a red circle on the left and a blue box above a green cross"
    Plain,
    /// "there is a red circle on the left and …"
    ThereIs,
    /// "two shapes: a red circle on the left and a blue box"
    Counted,
    /// "the red circle is on the left and the blue box is above the red circle"
    Definite,
}

/// How elaborate clauses may be; later retries use simpler styles so that
/// every caption fits [`MAX_CAPTION_WORDS`].
#[derive(Debug, Clone, Copy)]
struct Style {
    size: f64,
    relation: f64,
    bare: f64,
    definite: bool,
}

const STYLES: [(usize, Style); 4] = [
    (
        6,
        Style {
            size: SIZE_PROBABILITY,
            relation: RELATION_PROBABILITY,
            bare: BARE_PROBABILITY,
            definite: true,
        },
    ),
    (
        4,
        Style {
            size: 0.0,
            relation: RELATION_PROBABILITY,
            bare: BARE_PROBABILITY,
            definite: true,
        },
    ),
    (
        4,
        Style {
            size: 0.0,
            relation: 0.0,
            bare: 0.5,
            definite: false,
        },
    ),
    // Always short enough: no predicates, no sizes.
    (
        1,
        Style {
            size: 0.0,
            relation: 0.0,
            bare: 1.0,
            definite: false,
        },
    ),
];

/// `n` reference captions for `scene`, distinct where the grammar allows
/// (duplicates only after many draws fail to find a new one). Captions are
/// lowercase, without a trailing period, at most [`MAX_CAPTION_WORDS`] words.
/// An empty scene has no captions.
pub fn reference_captions(scene: &Scene, rng: &mut Rng, n: usize) -> Vec<String> {
    let mut out: Vec<String> = Vec::with_capacity(n);
    if scene.objects.is_empty() {
        return out;
    }
    let mut attempts = 0;
    while out.len() < n && attempts < 20 * n {
        let c = caption(scene, rng);
        if !out.contains(&c) {
            out.push(c);
        }
        attempts += 1;
    }
    while out.len() < n {
        out.push(caption(scene, rng));
    }
    out
}

/// One random reference caption for `scene` (empty for an empty scene).
pub fn caption(scene: &Scene, rng: &mut Rng) -> String {
    if scene.objects.is_empty() {
        return String::new();
    }
    let mut tokens = Vec::new();
    for (tries, style) in STYLES {
        for _ in 0..tries {
            tokens = build(scene, rng, style);
            if word_count(&tokens) <= MAX_CAPTION_WORDS {
                return detokenize(&tokens);
            }
        }
    }
    // The last style fits any scene of up to 7 objects (sampled scenes have at
    // most 5); a longer hand-made scene keeps its over-long caption.
    detokenize(&tokens)
}

fn build(scene: &Scene, rng: &mut Rng, style: Style) -> Vec<&'static str> {
    let k = scene.objects.len();
    let mut order: Vec<usize> = (0..k).collect();
    rng.shuffle(&mut order);
    let all = k == 1 || !rng.chance(PARTIAL_PROBABILITY);
    if !all {
        order.truncate(1 + rng.index(k - 1));
    }
    let mut forms = vec![Form::Plain, Form::ThereIs];
    if all && k <= COUNT_WORDS.len() {
        forms.push(Form::Counted);
    }
    if style.definite {
        forms.push(Form::Definite);
    }
    let form = *rng.choose(&forms);
    let b = Builder { scene, style };
    let mut clauses: Vec<Vec<&'static str>> = Vec::new();
    match form {
        Form::Plain | Form::ThereIs => {
            let mut rest = order;
            while !rest.is_empty() {
                let x = rest.remove(0);
                let mut clause = Vec::new();
                b.noun_phrase(rng, &mut clause, x, false);
                let related = if !rest.is_empty() && rng.chance(style.relation) {
                    let yi = rng.index(rest.len());
                    let y = rest[yi];
                    b.relation(rng, &mut clause, x, y).then(|| {
                        b.noun_phrase(rng, &mut clause, y, false);
                        rest.remove(yi);
                    })
                } else {
                    None
                };
                if related.is_none() && !rng.chance(style.bare) {
                    b.position(rng, &mut clause, x);
                }
                clauses.push(clause);
            }
        }
        Form::Counted => {
            for &x in &order {
                let mut clause = Vec::new();
                b.noun_phrase(rng, &mut clause, x, false);
                if !rng.chance(style.bare) {
                    b.position(rng, &mut clause, x);
                }
                clauses.push(clause);
            }
        }
        Form::Definite => {
            // Each described object is the subject of one clause; a relation
            // may point at any other object, described or not (so "the red
            // circle is above the blue box" alone is a caption too).
            for &x in &order {
                let mut clause = Vec::new();
                b.noun_phrase(rng, &mut clause, x, true);
                clause.push("is");
                let mut related = false;
                if k > 1 && rng.chance(style.relation) {
                    let mut y = rng.index(k - 1);
                    if y >= x {
                        y += 1;
                    }
                    if b.relation(rng, &mut clause, x, y) {
                        b.noun_phrase(rng, &mut clause, y, true);
                        related = true;
                    }
                }
                if !related {
                    b.position(rng, &mut clause, x);
                }
                clauses.push(clause);
            }
        }
    }
    let mut tokens: Vec<&'static str> = Vec::new();
    match form {
        Form::ThereIs => tokens.extend(["there", "is"]),
        Form::Counted => {
            let n = clauses.len();
            tokens.push(COUNT_WORDS[n - 1]);
            let nouns = if n == 1 {
                &COUNT_NOUNS_SINGULAR
            } else {
                &COUNT_NOUNS_PLURAL
            };
            tokens.push(*rng.choose(nouns));
            tokens.push(":");
        }
        Form::Plain | Form::Definite => {}
    }
    let last = clauses.len() - 1;
    for (i, clause) in clauses.into_iter().enumerate() {
        if i > 0 {
            tokens.push(if i == last { "and" } else { "," });
        }
        tokens.extend(clause);
    }
    tokens
}

struct Builder<'a> {
    scene: &'a Scene,
    style: Style,
}

impl Builder<'_> {
    /// `a|an|the [size] colour shape` for object `idx`.
    fn noun_phrase(&self, rng: &mut Rng, out: &mut Vec<&'static str>, idx: usize, definite: bool) {
        let o = &self.scene.objects[idx];
        let size = rng
            .chance(self.style.size)
            .then(|| *rng.choose(size_words(o.size)));
        let colour = *rng.choose(colour_words(o.colour));
        let shape = *rng.choose(shape_words(o.shape));
        let first = size.unwrap_or(colour);
        out.push(if definite {
            "the"
        } else if first.starts_with(['a', 'e', 'i', 'o', 'u']) {
            "an"
        } else {
            "a"
        });
        out.extend(size);
        out.extend([colour, shape]);
    }

    fn position(&self, rng: &mut Rng, out: &mut Vec<&'static str>, idx: usize) {
        let o = &self.scene.objects[idx];
        let phrases = position_phrases(o.row(), o.col());
        out.extend(rng.choose(&phrases).iter().copied());
    }

    /// Appends a relation phrase true from `a` to `b`; `false` (and nothing
    /// appended) when none holds, which only a hand-made scene can cause.
    fn relation(&self, rng: &mut Rng, out: &mut Vec<&'static str>, a: usize, b: usize) -> bool {
        let relations = self.scene.relations(a, b);
        if relations.is_empty() {
            return false;
        }
        let relation = *rng.choose(&relations);
        out.extend(rng.choose(relation_phrases(relation)).iter().copied());
        true
    }
}
