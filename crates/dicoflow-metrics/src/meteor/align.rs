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

/// A search path's counters (METEOR's `PartialAlignment` without its
/// arrays, which live in a row of [`Rows`]: copying a path copies one row of
/// a reused buffer instead of allocating three vectors).
#[derive(Debug, Clone, Copy)]
struct Head {
    matches1: i32,
    matches2: i32,
    chunks: i32,
    idx: usize,
    /// −1: no open chunk.
    last_match_end: i64,
    distance: i32,
    /// The path's row in its step's [`Rows`].
    row: usize,
}

impl Head {
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

/// Buffers the search reuses from one alignment to the next (one per
/// thread): its rows and path lists grow to the largest search seen, and
/// an alignment then allocates no path.
#[derive(Default)]
pub(crate) struct Buffers {
    rows: [Vec<u32>; 2],
    heads: [Vec<Head>; 2],
}

/// Marks "no match" in a row.
const NO_MATCH: u32 = u32::MAX;

/// The arrays of search paths, one row of `width` `u32`s per path: for each
/// line-2 position the index of the chosen match starting there in
/// [`Stage::matches`] (or [`NO_MATCH`]), then the used-word bits of line 1,
/// then those of line 2 (32 per `u32`).
struct Rows {
    width: usize,
    used1_at: usize,
    used2_at: usize,
    data: Vec<u32>,
}

impl Rows {
    fn new(len1: usize, len2: usize) -> Self {
        let used1_at = len2;
        let used2_at = used1_at + len1.div_ceil(32);
        Rows {
            width: used2_at + len2.div_ceil(32),
            used1_at,
            used2_at,
            data: Vec::new(),
        }
    }

    fn row(&self, r: usize) -> &[u32] {
        &self.data[r * self.width..(r + 1) * self.width]
    }

    /// Appends a copy of `row` (of another `Rows` with the same layout) and
    /// returns its index.
    fn push(&mut self, row: &[u32]) -> usize {
        self.data.extend_from_slice(row);
        self.data.len() / self.width - 1
    }

    fn used2(&self, row: &[u32], j: usize) -> bool {
        row[self.used2_at + j / 32] >> (j % 32) & 1 != 0
    }

    fn chosen(&self, row: &[u32], j: usize) -> Option<u32> {
        Some(row[j]).filter(|&id| id != NO_MATCH)
    }

    fn is_used(&self, row: &[u32], m: &Match) -> bool {
        let bit = |at: usize, k: usize| row[at + k / 32] >> (k % 32) & 1 != 0;
        (m.start..m.start + m.length).any(|k| bit(self.used2_at, k))
            || (m.match_start..m.match_start + m.match_length).any(|k| bit(self.used1_at, k))
    }

    /// Marks `m`'s words used and records match `id` (starting at
    /// `m.start`) in row `r`.
    fn choose(&mut self, r: usize, id: u32, m: &Match) {
        let (w, u1, u2) = (self.width, self.used1_at, self.used2_at);
        let row = &mut self.data[r * w..(r + 1) * w];
        row[m.start] = id;
        for k in m.start..m.start + m.length {
            row[u2 + k / 32] |= 1 << (k % 32);
        }
        for k in m.match_start..m.match_start + m.match_length {
            row[u1 + k / 32] |= 1 << (k % 32);
        }
    }
}

fn distance(m: &Match) -> i32 {
    (m.start as i32 - m.match_start as i32).abs()
}

/// `Constants.PARTIAL_COMPARE_TOTAL`.
fn compare(x: &Head, y: &Head) -> Ordering {
    (y.matches1 + y.matches2)
        .cmp(&(x.matches1 + x.matches2))
        .then(x.chunks.cmp(&y.chunks))
        .then(x.distance.cmp(&y.distance))
}

/// [`compare`], ties broken by the order the paths were made in (their
/// rows are numbered in that order): a total order whose sort is Java's
/// stable sort by [`compare`].
fn compare_stable(x: &Head, y: &Head) -> Ordering {
    compare(x, y).then(x.row.cmp(&y.row))
}

/// Puts the [`BEAM_SIZE`] best paths first, in the order of Java's stable
/// sort (the others after them, in no order: the search drops them).
fn keep_best(paths: &mut [Head]) {
    if paths.len() > BEAM_SIZE {
        paths.select_nth_unstable_by(BEAM_SIZE - 1, compare_stable);
    }
    let n = paths.len().min(BEAM_SIZE);
    paths[..n].sort_unstable_by(compare_stable);
}

/// Aligns hypothesis `s1` with reference `s2` and counts the result.
pub(crate) fn align(
    s1: &Sentence,
    s2: &Sentence,
    res: &Resources,
    buffers: &mut Buffers,
) -> AlignmentCounts {
    let (words1, words2) = (&s1.info, &s2.info);
    let mut s = Stage::new(s1, s2);
    s.match_exact(0);
    if s1.keys != s2.keys {
        s.match_stem(1);
        s.match_synonym(2);
        s.match_paraphrase(3, &res.paraphrases);
    }

    s.group();

    let mut rows = Rows::new(words1.len(), words2.len());
    rows.data = std::mem::take(&mut buffers.rows[0]);
    rows.data.clear();
    rows.data.resize(rows.width, 0);
    rows.data[..words2.len()].fill(NO_MATCH);
    // One-to-one, non-overlapping matches are definite.
    for i in 0..words2.len() {
        if let [m] = *s.at(i) {
            let alone = (0..m.length).all(|k| s.coverage2[i + k] == 1)
                && (0..m.match_length).all(|k| s.coverage1[m.match_start + k] == 1);
            if alone {
                rows.choose(0, s.starts[i] as u32, &m);
            }
        }
    }
    let best = resolve(&s, rows, buffers);

    let fn1: Vec<bool> = s1.info.iter().map(|w| w.function).collect();
    let fn2: Vec<bool> = s2.info.iter().map(|w| w.function).collect();
    let mut c = AlignmentCounts {
        len1: words1.len(),
        len2: words2.len(),
        function1: fn1.iter().filter(|&&f| f).count(),
        function2: fn2.iter().filter(|&&f| f).count(),
        ..AlignmentCounts::default()
    };
    for m in best.iter().flatten() {
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
    c.chunks = count_chunks(&best);
    c
}

/// `Aligner.resolve`: the beam search from the single path in `start`;
/// the chosen match at each line-2 position of the best path.
fn resolve(s: &Stage<'_>, start: Rows, buffers: &mut Buffers) -> Vec<Option<Match>> {
    let n = s.s2.len();
    let mut cur = Rows {
        data: std::mem::take(&mut buffers.rows[1]),
        ..start
    };
    let mut next_rows = start;
    let mut paths = std::mem::take(&mut buffers.heads[0]);
    let mut next = std::mem::take(&mut buffers.heads[1]);
    next.clear();
    next.push(Head {
        matches1: 0,
        matches2: 0,
        chunks: 0,
        idx: 0,
        last_match_end: -1,
        distance: 0,
        row: 0,
    });
    for current in 0..=n {
        std::mem::swap(&mut paths, &mut next);
        std::mem::swap(&mut cur, &mut next_rows);
        next.clear();
        next_rows.data.clear();
        keep_best(&mut paths);
        for &head in paths.iter().take(BEAM_SIZE) {
            let mut path = head;
            let row = cur.row(head.row);
            let mut push = |mut h: Head, next_rows: &mut Rows| {
                h.row = next_rows.push(row);
                next.push(h);
                h.row
            };
            if current == n {
                if path.last_match_end != -1 {
                    path.chunks += 1;
                }
                push(path, &mut next_rows);
                continue;
            }
            if cur.used2(row, current) {
                if current < path.idx {
                    push(path, &mut next_rows);
                } else if let Some(id) = cur.chosen(row, path.idx) {
                    let m = s.matches[id as usize];
                    path.take(&m);
                    path.distance += distance(&m);
                    push(path, &mut next_rows);
                }
                continue;
            }
            let first = s.starts[current];
            for (k, m) in s.at(current).iter().enumerate() {
                if cur.is_used(row, m) {
                    continue;
                }
                let mut branch = path;
                branch.take(m);
                let r = push(branch, &mut next_rows);
                next_rows.choose(r, (first + k) as u32, m);
                // Java adds the distance to the parent path, not the branch.
                path.distance += distance(m);
            }
            if path.last_match_end != -1 {
                path.chunks += 1;
                path.last_match_end = -1;
            }
            path.idx += 1;
            push(path, &mut next_rows);
        }
        if next.is_empty() {
            // "unexpected conditions": Java continues with the best path.
            let mut head = paths[0];
            head.row = next_rows.push(cur.row(head.row));
            next.push(head);
        }
    }
    let best = next
        .iter()
        .min_by(|x, y| compare_stable(x, y))
        .map_or(0, |h| h.row);
    let row = next_rows.row(best);
    let chosen = (0..n)
        .map(|j| next_rows.chosen(row, j).map(|id| s.matches[id as usize]))
        .collect();
    *buffers = Buffers {
        rows: [cur.data, next_rows.data],
        heads: [paths, next],
    };
    chosen
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
