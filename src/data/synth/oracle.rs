//! The oracle judge: how fluent and how true a caption is of its scene.
//!
//! The judge is the ground truth the rest of dicoflow is measured against: a
//! learned evaluator can be fooled, the oracle cannot. It reports whether the
//! caption is in the caption language, and precision and recall of its claims
//! against the stored scene.

use serde::{Deserialize, Serialize};

use super::lexicon::{is_known, tokenize};
use super::parse::{extract_claims, recognise, Claims, Entity, Fact};
use super::scene::{Scene, Size};

/// Search nodes after which the matching search keeps the best matching found
/// so far. Only pathological input (dozens of distinct referents) gets near
/// it; the first matching tried is the greedy one (each referent to its most
/// compatible free object), so even then the result is sensible.
pub const SEARCH_BUDGET: usize = 100_000;

/// The oracle's verdict on one caption.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Judgement {
    /// The caption is a sentence of the caption language.
    pub grammatical: bool,
    /// `true_facts / stated_facts`; 0 when nothing is stated.
    pub precision: f64,
    /// `objects_recalled / scene_objects`; 1 for a scene without objects.
    pub recall: f64,
    /// Distinct atomic claims: each mentioned shape, colour, size, grid row,
    /// grid column, relation and object count.
    pub stated_facts: usize,
    /// Claims that hold under the best matching of referents to objects.
    pub true_facts: usize,
    /// Distinct referents (one per distinct colour + shape description).
    pub objects_mentioned: usize,
    /// Scene objects matched to a referent whose shape, colour and any stated
    /// size are all correct.
    pub objects_recalled: usize,
    /// Objects in the scene.
    pub scene_objects: usize,
    /// Tokens outside the caption vocabulary (a trailing period excluded).
    pub unknown_words: usize,
    /// `stated_facts` and `true_facts` split by kind of claim (same matching).
    #[serde(default)]
    pub by_kind: FactCounts,
}

/// The kinds of atomic claim the judge counts (`datasets/synthetic_world.md`,
/// section 4, "Claims"): what a caption says about an object's colour, shape, size, grid
/// row or grid column, a relation between two objects, or the object count.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FactKind {
    Colour,
    Shape,
    Size,
    Row,
    Column,
    /// Left of / right of, above / below.
    Relation,
    Count,
}

impl FactKind {
    /// Every kind, in the order of [`FactCounts`]' arrays.
    pub const ALL: [FactKind; 7] = [
        FactKind::Colour,
        FactKind::Shape,
        FactKind::Size,
        FactKind::Row,
        FactKind::Column,
        FactKind::Relation,
        FactKind::Count,
    ];

    /// Lower-case name, as in reports.
    pub fn name(self) -> &'static str {
        match self {
            FactKind::Colour => "colour",
            FactKind::Shape => "shape",
            FactKind::Size => "size",
            FactKind::Row => "row",
            FactKind::Column => "column",
            FactKind::Relation => "relation",
            FactKind::Count => "count",
        }
    }

    fn of(fact: Fact) -> Self {
        match fact {
            Fact::Colour(..) => FactKind::Colour,
            Fact::Shape(..) => FactKind::Shape,
            Fact::Size(..) => FactKind::Size,
            Fact::Row(..) => FactKind::Row,
            Fact::Col(..) => FactKind::Column,
            Fact::LeftOf(..) | Fact::Above(..) => FactKind::Relation,
            Fact::Count(_) => FactKind::Count,
        }
    }
}

/// Stated and true claims per [`FactKind`] (indexed by `kind as usize`), for
/// one caption or summed over many: where a captioner's precision is lost.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FactCounts {
    /// Claims stated, per kind.
    pub stated: [usize; FactKind::ALL.len()],
    /// Of those, claims that hold under the judge's matching, per kind.
    pub true_facts: [usize; FactKind::ALL.len()],
}

impl FactCounts {
    /// Adds `other`'s counts to these (summing over captions).
    pub fn add(&mut self, other: &FactCounts) {
        for k in 0..FactKind::ALL.len() {
            self.stated[k] += other.stated[k];
            self.true_facts[k] += other.true_facts[k];
        }
    }

    /// `true / stated` of one kind (micro-averaged when summed over captions);
    /// `None` when no claim of that kind was stated.
    pub fn precision(&self, kind: FactKind) -> Option<f64> {
        let k = kind as usize;
        (self.stated[k] > 0).then(|| self.true_facts[k] as f64 / self.stated[k] as f64)
    }
}

impl Judgement {
    /// Harmonic mean of precision and recall (0 when both are 0).
    pub fn f1(&self) -> f64 {
        let s = self.precision + self.recall;
        if s > 0.0 {
            2.0 * self.precision * self.recall / s
        } else {
            0.0
        }
    }
}

/// Judges `caption` against `scene`. Accepts any text; never panics.
///
/// Claims come from the lenient extractor (identical to a full parse on
/// grammatical captions). Referents are matched one-to-one to scene objects,
/// choosing the matching that recalls the most objects and, among those, makes
/// the most claims true (then the first found: referents in order of mention,
/// each trying its compatible objects with the most true one-referent claims
/// first, ties by object index, then no object); a referent may only match an
/// object that shares its shape or its colour — a mention wrong in both
/// refers to nothing.
pub fn judge(scene: &Scene, caption: &str) -> Judgement {
    let tokens = tokenize(caption);
    let mut words: Vec<&str> = tokens.iter().map(String::as_str).collect();
    if words.last() == Some(&".") {
        words.pop();
    }
    let grammatical = recognise(&words);
    let unknown_words = words.iter().filter(|w| !is_known(w)).count();
    let claims = extract_claims(&words);
    let (true_facts, objects_recalled, assign) = best_matching(scene, &claims);
    let mut by_kind = FactCounts::default();
    for &fact in &claims.facts {
        let k = FactKind::of(fact) as usize;
        by_kind.stated[k] += 1;
        by_kind.true_facts[k] += usize::from(holds(scene, fact, &assign));
    }
    debug_assert_eq!(by_kind.true_facts.iter().sum::<usize>(), true_facts);
    let stated_facts = claims.facts.len();
    let scene_objects = scene.objects.len();
    Judgement {
        grammatical,
        precision: if stated_facts == 0 {
            0.0
        } else {
            true_facts as f64 / stated_facts as f64
        },
        recall: if scene_objects == 0 {
            1.0
        } else {
            objects_recalled as f64 / scene_objects as f64
        },
        stated_facts,
        true_facts,
        objects_mentioned: claims.entities.len(),
        objects_recalled,
        scene_objects,
        unknown_words,
        by_kind,
    }
}

/// Branch-and-bound over injective matchings of referents to objects;
/// returns (true facts, recalled objects, each referent's object) of the best one.
fn best_matching(scene: &Scene, claims: &Claims) -> (usize, usize, Vec<Option<usize>>) {
    let m = claims.entities.len();
    // Facts are scored as soon as their last referent is decided.
    let mut buckets: Vec<Vec<Fact>> = vec![Vec::new(); m];
    let mut constant_true = 0;
    for &fact in &claims.facts {
        match referents(fact) {
            None => constant_true += usize::from(holds(scene, fact, &[])),
            Some(last) => buckets[last].push(fact),
        }
    }
    let mut remaining = vec![0usize; m + 1];
    for d in (0..m).rev() {
        remaining[d] = remaining[d + 1] + buckets[d].len();
    }
    let options: Vec<Vec<usize>> = claims
        .entities
        .iter()
        .enumerate()
        .map(|(i, e)| {
            let mut compatible: Vec<(usize, usize)> = (0..scene.objects.len())
                .filter(|&o| {
                    let obj = &scene.objects[o];
                    obj.shape == e.shape || e.colour == Some(obj.colour)
                })
                .map(|o| {
                    let mut assign = vec![None; m];
                    assign[i] = Some(o);
                    let unary = claims
                        .facts
                        .iter()
                        .filter(|&&f| unary_of(f) == Some(i) && holds(scene, f, &assign))
                        .count();
                    (o, unary)
                })
                .collect();
            // Most true one-referent facts first (stable: ties by object index).
            compatible.sort_by_key(|&(_, unary)| std::cmp::Reverse(unary));
            compatible.into_iter().map(|(o, _)| o).collect()
        })
        .collect();
    let sizes: Vec<Vec<Size>> = (0..m)
        .map(|e| {
            claims
                .facts
                .iter()
                .filter_map(|&f| match f {
                    Fact::Size(x, s) if x == e => Some(s),
                    _ => None,
                })
                .collect()
        })
        .collect();
    let mut search = Search {
        scene,
        entities: &claims.entities,
        buckets,
        remaining,
        options,
        sizes,
        assign: vec![None; m],
        used: vec![false; scene.objects.len()],
        best: None,
        best_assign: vec![None; m],
        nodes: 0,
    };
    search.visit(0, 0, 0);
    let (r, t) = search.best.unwrap_or((0, 0));
    (t + constant_true, r, search.best_assign)
}

/// The highest referent index a fact mentions (`None` for a count).
fn referents(fact: Fact) -> Option<usize> {
    match fact {
        Fact::Shape(e, _)
        | Fact::Colour(e, _)
        | Fact::Size(e, _)
        | Fact::Row(e, _)
        | Fact::Col(e, _) => Some(e),
        Fact::LeftOf(a, b) | Fact::Above(a, b) => Some(a.max(b)),
        Fact::Count(_) => None,
    }
}

/// The referent of a one-referent fact.
fn unary_of(fact: Fact) -> Option<usize> {
    match fact {
        Fact::Shape(e, _)
        | Fact::Colour(e, _)
        | Fact::Size(e, _)
        | Fact::Row(e, _)
        | Fact::Col(e, _) => Some(e),
        Fact::LeftOf(..) | Fact::Above(..) | Fact::Count(_) => None,
    }
}

/// Whether `fact` holds when referent `e` is object `assign[e]`.
fn holds(scene: &Scene, fact: Fact, assign: &[Option<usize>]) -> bool {
    let obj = |e: usize| assign.get(e).copied().flatten().map(|o| &scene.objects[o]);
    let pair = |a: usize, b: usize| match (assign[a], assign[b]) {
        (Some(x), Some(y)) if x != y => Some((&scene.objects[x], &scene.objects[y])),
        _ => None,
    };
    match fact {
        Fact::Shape(e, s) => obj(e).is_some_and(|o| o.shape == s),
        Fact::Colour(e, c) => obj(e).is_some_and(|o| o.colour == c),
        Fact::Size(e, s) => obj(e).is_some_and(|o| o.size == s),
        Fact::Row(e, r) => obj(e).is_some_and(|o| o.row() == r),
        Fact::Col(e, c) => obj(e).is_some_and(|o| o.col() == c),
        Fact::LeftOf(a, b) => {
            pair(a, b).is_some_and(|(x, y)| x.holds(super::scene::Relation::LeftOf, y))
        }
        Fact::Above(a, b) => {
            pair(a, b).is_some_and(|(x, y)| x.holds(super::scene::Relation::Above, y))
        }
        Fact::Count(n) => scene.objects.len() == n,
    }
}

struct Search<'a> {
    scene: &'a Scene,
    entities: &'a [Entity],
    buckets: Vec<Vec<Fact>>,
    remaining: Vec<usize>,
    options: Vec<Vec<usize>>,
    sizes: Vec<Vec<Size>>,
    assign: Vec<Option<usize>>,
    used: Vec<bool>,
    best: Option<(usize, usize)>,
    best_assign: Vec<Option<usize>>,
    nodes: usize,
}

impl Search<'_> {
    fn visit(&mut self, d: usize, true_so_far: usize, recalled_so_far: usize) {
        self.nodes += 1;
        let m = self.entities.len();
        if d == m {
            let score = (recalled_so_far, true_so_far);
            if self.best.is_none_or(|b| score > b) {
                self.best = Some(score);
                self.best_assign.clone_from(&self.assign);
            }
            return;
        }
        if let Some(best) = self.best {
            let free = self.used.iter().filter(|&&u| !u).count();
            let bound = (
                recalled_so_far + free.min(m - d),
                true_so_far + self.remaining[d],
            );
            if bound <= best || self.nodes > SEARCH_BUDGET {
                return;
            }
        }
        for k in 0..=self.options[d].len() {
            let choice = self.options[d].get(k).copied();
            if let Some(o) = choice {
                if self.used[o] {
                    continue;
                }
                self.used[o] = true;
            }
            self.assign[d] = choice;
            let t = self.buckets[d]
                .iter()
                .filter(|&&f| holds(self.scene, f, &self.assign))
                .count();
            let r = usize::from(choice.is_some_and(|o| self.recalls(d, o)));
            self.visit(d + 1, true_so_far + t, recalled_so_far + r);
            if let Some(o) = choice {
                self.used[o] = false;
            }
        }
        self.assign[d] = None;
    }

    /// Referent `e` correctly identifies object `o`.
    fn recalls(&self, e: usize, o: usize) -> bool {
        let ent = &self.entities[e];
        let obj = &self.scene.objects[o];
        ent.shape == obj.shape
            && ent.colour == Some(obj.colour)
            && self.sizes[e].iter().all(|&s| s == obj.size)
    }
}
