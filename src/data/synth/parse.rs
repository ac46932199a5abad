//! Reading captions: a strict recogniser for the caption language and a
//! lenient claim extractor.
//!
//! Grammaticality and meaning are computed separately on purpose: on a
//! grammatical caption the extractor attaches every position and relation to
//! the noun phrase the grammar attaches it to (positions follow their subject,
//! relations sit between their two noun phrases), and on a model's broken
//! output it still finds whatever noun phrases, positions and relations are
//! recognisable, so precision and recall stay meaningful when grammaticality
//! fails.

use super::config::MAX_OBJECTS;
use super::lexicon::{
    parse_colour, parse_count, parse_shape, parse_size, word_count, COUNT_NOUNS_PLURAL,
    COUNT_NOUNS_SINGULAR, MAX_CAPTION_WORDS,
};
use super::scene::{Col, Colour, Relation, Row, Shape, Size};

/// What a caption refers to: one referent per distinct (colour, shape)
/// description. Repeating a description refers to the same object again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Entity {
    /// Stated colour; only broken captions can omit it.
    pub colour: Option<Colour>,
    /// Stated shape.
    pub shape: Shape,
}

/// One atomic claim. Relations are normalised to `LeftOf` / `Above`, so
/// "a left of b" and "b right of a" are the same fact.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Fact {
    /// Entity has this shape.
    Shape(usize, Shape),
    /// Entity has this colour.
    Colour(usize, Colour),
    /// Entity has this size.
    Size(usize, Size),
    /// Entity's centre is in this grid row.
    Row(usize, Row),
    /// Entity's centre is in this grid column.
    Col(usize, Col),
    /// First entity is left of the second.
    LeftOf(usize, usize),
    /// First entity is above the second.
    Above(usize, usize),
    /// The scene holds exactly this many objects.
    Count(usize),
}

impl Fact {
    /// The fact for "`a` `relation` `b`", normalised.
    fn relation(a: usize, relation: Relation, b: usize) -> Fact {
        match relation {
            Relation::LeftOf => Fact::LeftOf(a, b),
            Relation::RightOf => Fact::LeftOf(b, a),
            Relation::Above => Fact::Above(a, b),
            Relation::Below => Fact::Above(b, a),
        }
    }
}

/// Everything a caption claims: its referents and the distinct facts about them.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Claims {
    /// Referents in order of first mention.
    pub entities: Vec<Entity>,
    /// Distinct facts, sorted (stating a fact twice does not count twice).
    pub facts: Vec<Fact>,
}

impl Claims {
    fn entity(&mut self, colour: Option<Colour>, shape: Shape) -> usize {
        let e = Entity { colour, shape };
        match self.entities.iter().position(|&x| x == e) {
            Some(i) => i,
            None => {
                self.entities.push(e);
                self.entities.len() - 1
            }
        }
    }
}

fn relation_word(word: &str) -> Option<Relation> {
    match word {
        "above" | "over" => Some(Relation::Above),
        "below" | "under" => Some(Relation::Below),
        _ => None,
    }
}

/// Extracts claims from any token sequence by scanning left to right:
///
/// - a run of size/colour words ended by a shape word is a noun phrase (other
///   words such as articles are skipped); its key is the last colour stated;
/// - `<count word> shape(s)|object(s)` states the number of objects;
/// - `left of` / `right of` / `above` / `over` / `below` / `under` relate the
///   latest noun phrase to the next one;
/// - other `left` / `right` / `top` / `bottom` state the latest noun phrase's
///   column or row, `middle` / `center` state both.
pub(crate) fn extract_claims<S: AsRef<str>>(tokens: &[S]) -> Claims {
    let toks: Vec<&str> = tokens.iter().map(|t| t.as_ref()).collect();
    let mut claims = Claims::default();
    let mut facts: Vec<Fact> = Vec::new();
    let mut last: Option<usize> = None;
    let mut pending: Option<(usize, Relation)> = None;
    let mut i = 0;
    while i < toks.len() {
        let w = toks[i];
        let next = toks.get(i + 1).copied();
        if let Some(n) = parse_count(w) {
            let noun_ok = next.is_some_and(|x| {
                COUNT_NOUNS_SINGULAR.contains(&x) || COUNT_NOUNS_PLURAL.contains(&x)
            });
            if noun_ok {
                facts.push(Fact::Count(n));
                i += 2;
                continue;
            }
        }
        // Noun phrase: adjectives then a shape word.
        let mut j = i;
        while j < toks.len() && (parse_colour(toks[j]).is_some() || parse_size(toks[j]).is_some()) {
            j += 1;
        }
        if let Some(shape) = toks.get(j).and_then(|&x| parse_shape(x)) {
            let adjectives = &toks[i..j];
            let colour = adjectives.iter().rev().find_map(|&x| parse_colour(x));
            let e = claims.entity(colour, shape);
            facts.push(Fact::Shape(e, shape));
            for &a in adjectives {
                if let Some(c) = parse_colour(a) {
                    facts.push(Fact::Colour(e, c));
                }
                if let Some(s) = parse_size(a) {
                    facts.push(Fact::Size(e, s));
                }
            }
            if let Some((subject, relation)) = pending.take() {
                facts.push(Fact::relation(subject, relation, e));
            }
            last = Some(e);
            i = j + 1;
            continue;
        }
        if j > i {
            // Adjectives without a noun state nothing.
            i = j;
            continue;
        }
        match w {
            "left" | "right" if next == Some("of") => {
                let relation = if w == "left" {
                    Relation::LeftOf
                } else {
                    Relation::RightOf
                };
                pending = last.map(|s| (s, relation));
                i += 2;
                continue;
            }
            _ => {}
        }
        if let Some(relation) = relation_word(w) {
            pending = last.map(|s| (s, relation));
        } else if let Some(e) = last {
            match w {
                "left" => facts.push(Fact::Col(e, Col::Left)),
                "right" => facts.push(Fact::Col(e, Col::Right)),
                "top" => facts.push(Fact::Row(e, Row::Top)),
                "bottom" => facts.push(Fact::Row(e, Row::Bottom)),
                "middle" | "center" => {
                    facts.push(Fact::Row(e, Row::Middle));
                    facts.push(Fact::Col(e, Col::Middle));
                }
                _ => {}
            }
        }
        i += 1;
    }
    facts.sort_unstable();
    facts.dedup();
    claims.facts = facts;
    claims
}

/// Whether a caption belongs to the caption language (see
/// `datasets/synthetic_world.md`): case, surrounding whitespace, spacing around
/// punctuation and one trailing period are ignored.
pub fn is_grammatical(caption: &str) -> bool {
    let tokens = super::lexicon::tokenize(caption);
    let mut toks: Vec<&str> = tokens.iter().map(String::as_str).collect();
    if toks.last() == Some(&".") {
        toks.pop();
    }
    recognise(&toks)
}

/// Whether tokens (already without a trailing period) form a caption.
pub(crate) fn recognise(tokens: &[&str]) -> bool {
    if word_count(tokens) > MAX_CAPTION_WORDS {
        return false;
    }
    let mut r = Recogniser::new(tokens);
    r.caption() && r.referents.len() <= MAX_OBJECTS
}

/// Which clause shape a list holds.
#[derive(Clone, Copy, PartialEq, Eq)]
enum ClauseKind {
    /// `indef-np [predicate]` where a relation's object is an indefinite NP.
    Indefinite,
    /// `indef-np [position]` (after a count phrase).
    Listed,
    /// `def-np "is" predicate` where a relation's object is a definite NP.
    Definite,
}

type Key = (Colour, Shape);

/// Recursive-descent recogniser; see the grammar in the module docs of
/// `synth` and in `datasets/synthetic_world.md`.
struct Recogniser<'a> {
    toks: &'a [&'a str],
    pos: usize,
    /// Keys introduced by indefinite NPs (each may be introduced once).
    introduced: Vec<Key>,
    /// Keys that were the subject of a definite clause (each once).
    subjects: Vec<Key>,
    /// Stated size per key (all mentions of a referent must agree).
    sizes: Vec<(Key, Size)>,
    /// Every distinct referent (a caption names at most [`MAX_OBJECTS`]).
    referents: Vec<Key>,
}

impl<'a> Recogniser<'a> {
    fn new(toks: &'a [&'a str]) -> Self {
        Self {
            toks,
            pos: 0,
            introduced: Vec::new(),
            subjects: Vec::new(),
            sizes: Vec::new(),
            referents: Vec::new(),
        }
    }

    fn peek(&self) -> Option<&'a str> {
        self.toks.get(self.pos).copied()
    }

    fn peek_at(&self, offset: usize) -> Option<&'a str> {
        self.toks.get(self.pos + offset).copied()
    }

    fn eat(&mut self, word: &str) -> bool {
        if self.peek() == Some(word) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn at_end(&self) -> bool {
        self.pos == self.toks.len()
    }

    fn caption(&mut self) -> bool {
        let ok = match self.peek() {
            None => false,
            Some("there") => {
                self.eat("there") && self.eat("is") && self.list(ClauseKind::Indefinite).is_some()
            }
            Some("the") => self.list(ClauseKind::Definite).is_some(),
            Some(w) if parse_count(w).is_some() => self.counted_list(),
            Some(_) => self.list(ClauseKind::Indefinite).is_some(),
        };
        ok && self.at_end()
    }

    /// `count noun ":" list(listed)` with as many clauses as the count says.
    fn counted_list(&mut self) -> bool {
        let Some(n) = self.peek().and_then(parse_count) else {
            return false;
        };
        self.pos += 1;
        let nouns: &[&str] = if n == 1 {
            &COUNT_NOUNS_SINGULAR
        } else {
            &COUNT_NOUNS_PLURAL
        };
        if !self.peek().is_some_and(|w| nouns.contains(&w)) {
            return false;
        }
        self.pos += 1;
        self.eat(":") && self.list(ClauseKind::Listed) == Some(n)
    }

    /// `clause | clause ("," clause)* "and" clause`; returns the clause count.
    fn list(&mut self, kind: ClauseKind) -> Option<usize> {
        self.clause(kind)?;
        let mut n = 1;
        let mut comma = false;
        loop {
            if self.eat(",") {
                self.clause(kind)?;
                n += 1;
                comma = true;
            } else if self.eat("and") {
                self.clause(kind)?;
                return Some(n + 1);
            } else if comma {
                return None;
            } else {
                return Some(n);
            }
        }
    }

    fn clause(&mut self, kind: ClauseKind) -> Option<()> {
        match kind {
            ClauseKind::Indefinite => {
                self.indefinite_np()?;
                if self.starts_position() {
                    self.position()
                } else if self.starts_relation() {
                    self.relation()?;
                    self.indefinite_np().map(|_| ())
                } else {
                    Some(())
                }
            }
            ClauseKind::Listed => {
                self.indefinite_np()?;
                if self.starts_position() {
                    self.position()
                } else {
                    Some(())
                }
            }
            ClauseKind::Definite => {
                let subject = self.definite_np()?;
                if self.subjects.contains(&subject) {
                    return None;
                }
                self.subjects.push(subject);
                if !self.eat("is") {
                    return None;
                }
                if self.starts_position() {
                    self.position()
                } else {
                    self.relation()?;
                    let object = self.definite_np()?;
                    (object != subject).then_some(())
                }
            }
        }
    }

    /// `("a" | "an") [size] colour shape`, introducing a new referent.
    fn indefinite_np(&mut self) -> Option<Key> {
        let article = self.peek()?;
        if article != "a" && article != "an" {
            return None;
        }
        let next = self.peek_at(1)?;
        let vowel = next.starts_with(['a', 'e', 'i', 'o', 'u']);
        if (article == "an") != vowel {
            return None;
        }
        self.pos += 1;
        let key = self.np_body()?;
        if self.introduced.contains(&key) {
            return None;
        }
        self.introduced.push(key);
        Some(key)
    }

    /// `"the" [size] colour shape`.
    fn definite_np(&mut self) -> Option<Key> {
        if !self.eat("the") {
            return None;
        }
        self.np_body()
    }

    /// `[size] colour shape`, checking size agreement per referent.
    fn np_body(&mut self) -> Option<Key> {
        let size = self.peek().and_then(parse_size);
        if size.is_some() {
            self.pos += 1;
        }
        let colour = self.peek().and_then(parse_colour)?;
        self.pos += 1;
        let shape = self.peek().and_then(parse_shape)?;
        self.pos += 1;
        let key = (colour, shape);
        if !self.referents.contains(&key) {
            self.referents.push(key);
        }
        if let Some(size) = size {
            match self.sizes.iter().find(|(k, _)| *k == key) {
                Some(&(_, stated)) if stated != size => return None,
                Some(_) => {}
                None => self.sizes.push((key, size)),
            }
        }
        Some(key)
    }

    fn starts_position(&self) -> bool {
        matches!(self.peek(), Some("on" | "in" | "at"))
    }

    fn starts_relation(&self) -> bool {
        matches!(
            self.peek(),
            Some("to" | "left" | "right" | "above" | "over" | "below" | "under")
        )
    }

    /// `"on the" (left|right) | "at the" (top|bottom) | "in the" (middle|center)
    /// | "in the" (top|bottom) (left|right) ["corner"]`.
    fn position(&mut self) -> Option<()> {
        let prep = self.peek()?;
        self.pos += 1;
        if !self.eat("the") {
            return None;
        }
        let w = self.peek()?;
        self.pos += 1;
        match (prep, w) {
            ("on", "left" | "right") | ("at", "top" | "bottom") | ("in", "middle" | "center") => {
                Some(())
            }
            ("in", "top" | "bottom") => {
                if self.eat("left") || self.eat("right") {
                    self.eat("corner");
                    Some(())
                } else {
                    None
                }
            }
            _ => None,
        }
    }

    /// `["to" "the"] (left|right) "of" | above | over | below | under`.
    fn relation(&mut self) -> Option<()> {
        let w = self.peek()?;
        self.pos += 1;
        match w {
            "above" | "over" | "below" | "under" => Some(()),
            "to" => {
                if self.eat("the") && (self.eat("left") || self.eat("right")) && self.eat("of") {
                    Some(())
                } else {
                    None
                }
            }
            "left" | "right" => self.eat("of").then_some(()),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(text: &str) -> Claims {
        extract_claims(&super::super::lexicon::tokenize(text))
    }

    #[test]
    fn recogniser_accepts_each_form() {
        for ok in [
            "a red circle",
            "a small red circle on the left",
            "an orange box in the top left corner",
            "a big orange box in the bottom right",
            "there is a big blue square above a green triangle",
            "a red ball to the left of a blue box",
            "a red ball left of a blue box and a tiny green cross at the top",
            "two shapes: a red circle on the left and a blue square",
            "three objects: a red circle, a blue square in the middle and a green cross",
            "one shape: a yellow diamond in the center",
            "the red circle is above the blue square and the blue square is on the right",
            "The red circle is on the left.",
            "  a violet rhombus under a little yellow triangle  ",
            "a red circle, a blue box, a green cross, a red box and a blue cross",
            "the red circle is above the blue square",
            // 25 words, the longest a reference may be.
            "the small red circle is to the left of the large blue square and \
             the large blue square is right of the small red circle",
        ] {
            assert!(is_grammatical(ok), "{ok}");
        }
    }

    #[test]
    fn recogniser_rejects_near_misses() {
        for bad in [
            "",
            ".",
            "a red circle a red circle",
            "a red circle and a red circle",
            "a red circle and a big red ball",
            "a orange circle",
            "an red circle",
            "a circle",
            "red circle",
            "a red circle,",
            "a red circle, a blue square",
            "a red circle and a blue square and a green cross",
            "two shapes: a red circle",
            "two shape: a red circle and a blue box",
            "one shapes: a red circle",
            "two shapes: a red circle above a blue box",
            "the red circle",
            "the red circle is on the left and the red circle is at the top",
            "the red circle is above the red ball",
            "the small red circle is above the big red circle",
            "there is the red circle",
            "a red circle is on the left",
            "a red circle on the top",
            "a red circle at the left",
            "a red circle in the top",
            "a red circle in the middle left",
            "a red circle on the left on the left",
            "a red circle left a blue box",
            "a red circle to left of a blue box",
            "a red circle.. ",
            "a red circle. a blue box",
            "a red circle on the left corner",
            // Six referents: no scene has that many objects.
            "a red circle, a blue box, a green cross, a red box, a blue cross and a green box",
            // 27 words.
            "the small red circle is to the left of the large blue square and \
             the large blue square is to the right of the small red circle",
        ] {
            assert!(!is_grammatical(bad), "{bad:?}");
        }
    }

    #[test]
    fn extractor_normalises_relations_and_merges_repeats() {
        let a = claims("a red circle to the left of a blue box");
        let b = claims("the red circle is left of the blue square");
        assert_eq!(a, b);
        assert_eq!(a.entities.len(), 2);
        assert!(a.facts.contains(&Fact::LeftOf(0, 1)));
        let c = claims("the blue square is right of the red circle");
        assert!(c.facts.contains(&Fact::LeftOf(1, 0)));
        let rep = claims("a red circle a red circle a red ball");
        assert_eq!(rep.entities.len(), 1);
        assert_eq!(rep.facts.len(), 2);
    }

    #[test]
    fn extractor_reads_positions_counts_and_sizes() {
        let c = claims(
            "two shapes: a big red circle in the top left corner and a blue cross in the middle",
        );
        assert!(c.facts.contains(&Fact::Count(2)));
        assert!(c.facts.contains(&Fact::Size(0, Size::Large)));
        assert!(c.facts.contains(&Fact::Row(0, Row::Top)));
        assert!(c.facts.contains(&Fact::Col(0, Col::Left)));
        assert!(c.facts.contains(&Fact::Row(1, Row::Middle)));
        assert!(c.facts.contains(&Fact::Col(1, Col::Middle)));
        assert_eq!(c.facts.len(), 10);
    }
}
