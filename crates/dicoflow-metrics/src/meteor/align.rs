//! METEOR's aligner (`Aligner.align`): run the matchers, fix the matches that
//! are the only candidate for every word they cover, then a left-to-right
//! beam search over line-2 positions that, at each position, either takes
//! one of the matches starting there or skips it. Paths are ranked by
//! weighted match count (more is better), then chunks (fewer), then
//! distance (less), with a stable sort and a beam of 40.
//!
//! Java details that decide the result and are kept:
//! - the running weighted counts are `int`s updated with `+= length ×
//!   weight`, i.e. truncated after every match (with the search weights
//!   1, 0.5, 0.5, 0.5 a single-word stem match adds nothing);
//! - when a match is taken, the distance is added to the *parent* path, so
//!   later siblings and the skipping path inherit it;
//! - identical word sequences use the exact module only;
//! - the reported chunk count is recounted from the chosen matches.

use std::cmp::Ordering;
use std::collections::HashSet;

use rust_stemmers::Stemmer;

use super::matchers::{Match, Sentence, Stage};
use super::paraphrase::ParaphraseTable;
use super::synonym::SynonymDictionary;

/// Beam width (`Constants.DEFAULT_BEAM_SIZE`).
pub(crate) const BEAM_SIZE: usize = 40;
/// Weights the search ranks paths with (`MeteorScorer.loadConfiguration`:
/// exact 1.0, others 0.5), not the scoring weights.
const SEARCH_WEIGHTS: [f64; 4] = [1.0, 0.5, 0.5, 0.5];
/// Modules of `-l en`, in order.
pub(crate) const MODULES: usize = 4;

/// The resources the matchers use.
pub(crate) struct Resources {
    /// Snowball English (METEOR: `org.tartarus.snowball.ext.englishStemmer`).
    pub stemmer: Stemmer,
    pub synonyms: SynonymDictionary,
    pub paraphrases: ParaphraseTable,
    pub function_words: HashSet<String>,
}

impl std::fmt::Debug for Resources {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Resources")
            .field("function_words", &self.function_words.len())
            .finish_non_exhaustive()
    }
}

/// Counts of one alignment of a hypothesis (line 1) with a reference
/// (line 2): what `MeteorScorer.getMeteorStats(Alignment)` reads.
#[derive(Debug, Clone, PartialEq, Default)]
pub(crate) struct AlignmentCounts {
    pub len1: usize,
    pub len2: usize,
    pub function1: usize,
    pub function2: usize,
    /// Matched words by module, content and function, per line.
    pub content1: [usize; MODULES],
    pub content2: [usize; MODULES],
    pub function_matches1: [usize; MODULES],
    pub function_matches2: [usize; MODULES],
    pub chunks: usize,
}

#[derive(Debug, Clone, Default)]
struct Partial {
    matches: Vec<Option<Match>>,
    matches1: i32,
    matches2: i32,
    chunks: i32,
    idx: usize,
    /// −1: no open chunk.
    last_match_end: i64,
    distance: i32,
    used1: Vec<bool>,
    used2: Vec<bool>,
}

impl Partial {
    fn is_used(&self, m: &Match) -> bool {
        (0..m.length).any(|k| self.used2[m.start + k])
            || (0..m.match_length).any(|k| self.used1[m.match_start + k])
    }

    fn set_used(&mut self, m: &Match) {
        for k in 0..m.length {
            self.used2[m.start + k] = true;
        }
        for k in 0..m.match_length {
            self.used1[m.match_start + k] = true;
        }
    }

    /// Counts `m` as the next match of this path (Java's int `+=` with a
    /// double right-hand side truncates).
    fn take(&mut self, m: &Match) {
        let w = SEARCH_WEIGHTS[m.module];
        self.matches1 = (f64::from(self.matches1) + m.match_length as f64 * w) as i32;
        self.matches2 = (f64::from(self.matches2) + m.length as f64 * w) as i32;
        if self.last_match_end != -1 && m.match_start as i64 != self.last_match_end {
            self.chunks += 1;
        }
        self.idx = m.start + m.length;
        self.last_match_end = (m.match_start + m.match_length) as i64;
    }
}

fn distance(m: &Match) -> i32 {
    (m.start as i32 - m.match_start as i32).abs()
}

/// `Constants.PARTIAL_COMPARE_TOTAL`.
fn compare(x: &Partial, y: &Partial) -> Ordering {
    (y.matches1 + y.matches2)
        .cmp(&(x.matches1 + x.matches2))
        .then(x.chunks.cmp(&y.chunks))
        .then(x.distance.cmp(&y.distance))
}

/// Aligns hypothesis `s1` with reference `s2` and counts the result.
pub(crate) fn align(s1: &Sentence, s2: &Sentence, res: &Resources) -> AlignmentCounts {
    let (words1, words2) = (&s1.words, &s2.words);
    let mut s = Stage::new(s1, s2);
    s.match_exact(0);
    if s1.keys != s2.keys {
        s.match_stem(1);
        s.match_synonym(2);
        s.match_paraphrase(3, &res.paraphrases);
    }

    let mut start = Partial {
        matches: vec![None; words2.len()],
        last_match_end: -1,
        used1: vec![false; words1.len()],
        used2: vec![false; words2.len()],
        ..Partial::default()
    };
    // One-to-one, non-overlapping matches are definite.
    for i in 0..s.matches.len() {
        if let [m] = s.matches[i][..] {
            let alone = (0..m.length).all(|k| s.coverage2[i + k] == 1)
                && (0..m.match_length).all(|k| s.coverage1[m.match_start + k] == 1);
            if alone {
                start.matches[i] = Some(m);
                start.set_used(&m);
            }
        }
    }
    let best = resolve(&s, start);

    let fn1: Vec<bool> = s1.info.iter().map(|w| w.function).collect();
    let fn2: Vec<bool> = s2.info.iter().map(|w| w.function).collect();
    let mut c = AlignmentCounts {
        len1: words1.len(),
        len2: words2.len(),
        function1: fn1.iter().filter(|&&f| f).count(),
        function2: fn2.iter().filter(|&&f| f).count(),
        ..AlignmentCounts::default()
    };
    for m in best.matches.iter().flatten() {
        for k in 0..m.match_length {
            if fn1[m.match_start + k] {
                c.function_matches1[m.module] += 1;
            } else {
                c.content1[m.module] += 1;
            }
        }
        for k in 0..m.length {
            if fn2[m.start + k] {
                c.function_matches2[m.module] += 1;
            } else {
                c.content2[m.module] += 1;
            }
        }
    }
    c.chunks = count_chunks(&best.matches);
    c
}

/// `Aligner.resolve`: the beam search.
fn resolve(s: &Stage<'_>, start: Partial) -> Partial {
    let n = s.matches.len();
    let mut next = vec![start];
    for current in 0..=n {
        let mut paths = std::mem::take(&mut next);
        paths.sort_by(compare);
        for rank in 0..BEAM_SIZE.min(paths.len()) {
            if current == n {
                let mut path = std::mem::take(&mut paths[rank]);
                if path.last_match_end != -1 {
                    path.chunks += 1;
                }
                next.push(path);
                continue;
            }
            if paths[rank].used2[current] {
                let path = &mut paths[rank];
                if current < path.idx {
                    next.push(std::mem::take(path));
                } else if let Some(m) = path.matches[path.idx] {
                    path.take(&m);
                    path.distance += distance(&m);
                    next.push(std::mem::take(path));
                }
                continue;
            }
            let path = &mut paths[rank];
            for m in &s.matches[current] {
                if path.is_used(m) {
                    continue;
                }
                let mut branch = path.clone();
                branch.set_used(m);
                branch.matches[current] = Some(*m);
                branch.take(m);
                // Java adds the distance to the parent path, not the branch.
                path.distance += distance(m);
                next.push(branch);
            }
            if path.last_match_end != -1 {
                path.chunks += 1;
                path.last_match_end = -1;
            }
            path.idx += 1;
            next.push(std::mem::take(path));
        }
        if next.is_empty() {
            // "unexpected conditions": Java continues with the best path.
            next.push(std::mem::take(&mut paths[0]));
        }
    }
    next.sort_by(compare);
    next.swap_remove(0)
}

/// `Aligner.getCountAndChunks`: chunks of the chosen matches, walking line 2.
fn count_chunks(matches: &[Option<Match>]) -> usize {
    let (mut chunks, mut idx, mut last_end) = (0usize, 0usize, None::<usize>);
    while idx < matches.len() {
        match matches[idx] {
            None => {
                if last_end.take().is_some() {
                    chunks += 1;
                }
                idx += 1;
            }
            Some(m) => {
                if last_end.is_some_and(|e| m.match_start != e) {
                    chunks += 1;
                }
                idx = m.start + m.length;
                last_end = Some(m.match_start + m.match_length);
            }
        }
    }
    if last_end.is_some() {
        chunks += 1;
    }
    chunks
}
