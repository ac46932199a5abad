//! METEOR's four matchers (`ExactMatcher`, `StemMatcher`, `SynonymMatcher`,
//! `ParaphraseMatcher`), run in that order. Each appends candidate matches to
//! the list of the reference (line 2) position where they start, in the
//! Java loops' order, and counts how many matches cover each word; the
//! aligner's search explores the lists in this order, so it is part of the
//! result (ties between equally good alignments go to the earlier match).

use std::collections::HashMap;
use std::sync::Arc;

use super::align::Resources;
use super::java;
use super::paraphrase::{ParaphraseTable, UNKNOWN};

/// A candidate match: `length` words of line 2 (the reference) at `start`
/// with `match_length` words of line 1 (the hypothesis) at `match_start`,
/// found by module `module` (0 exact, 1 stem, 2 synonym, 3 paraphrase).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Match {
    pub start: usize,
    pub length: usize,
    pub match_start: usize,
    pub match_length: usize,
    pub module: usize,
}

/// What the matchers need to know about one word; depends on the word only.
#[derive(Debug, Clone)]
pub(crate) struct WordInfo {
    /// `String.hashCode()`: METEOR's word identity.
    pub key: i32,
    /// `String.hashCode()` of the Snowball English stem.
    pub stem_key: i32,
    /// Synsets of the word and of its base form, sorted.
    pub synsets: Arc<[u32]>,
    /// Bit `id % 64` set for each synset id: a quick disjointness test.
    pub synset_mask: u64,
    /// Paraphrase-table id ([`UNKNOWN`] if absent).
    pub para_id: u32,
    /// Whether it is a function word.
    pub function: bool,
}

/// [`WordInfo`] by word, filled as words are seen (captions reuse a small
/// vocabulary, so stemming and dictionary look-ups are done once per word).
#[derive(Debug, Default)]
pub(crate) struct WordCache {
    map: HashMap<String, WordInfo>,
}

impl WordCache {
    fn get(&mut self, word: &str, res: &Resources) -> WordInfo {
        if let Some(w) = self.map.get(word) {
            return w.clone();
        }
        let synsets: Arc<[u32]> = res.synonyms.all_synsets(word).into();
        let info = WordInfo {
            key: java::hash_code(word),
            stem_key: java::hash_code(&res.stemmer.stem(word)),
            synset_mask: synsets.iter().fold(0u64, |m, &id| m | 1 << (id % 64)),
            synsets,
            para_id: res.paraphrases.word_id(word),
            function: res.function_words.contains(&word.to_lowercase()),
        };
        self.map.insert(word.to_string(), info.clone());
        info
    }
}

/// One side of an alignment, with what every matcher needs computed once
/// (the hypothesis is aligned with each reference in turn).
#[derive(Debug)]
pub(crate) struct Sentence {
    /// Normalized, lowercased words.
    pub words: Vec<String>,
    /// Per word.
    pub info: Vec<WordInfo>,
    /// `String.hashCode()` of each word (as in `info`, gathered for the
    /// identical-sentence test).
    pub keys: Vec<i32>,
    /// Paraphrase-table id of each word.
    pub para_ids: Vec<u32>,
    /// Table phrases starting at each word, `(length, paraphrase index)`:
    /// those starting at word `j` are `para_paths[para_starts[j]..para_starts[j + 1]]`.
    pub para_paths: Vec<(usize, u32)>,
    pub para_starts: Vec<usize>,
    /// Bit `id % 64` set for each word's paraphrase-table id: lets the
    /// paraphrase matcher skip, without reading it, a paraphrase whose
    /// first word is not in the sentence.
    pub para_mask: u64,
}

impl Sentence {
    pub(crate) fn new(words: Vec<String>, res: &Resources, cache: &mut WordCache) -> Self {
        let info: Vec<WordInfo> = words.iter().map(|w| cache.get(w, res)).collect();
        let para_ids: Vec<u32> = info.iter().map(|w| w.para_id).collect();
        let mut para_paths = Vec::new();
        let mut para_starts = Vec::with_capacity(words.len() + 1);
        para_starts.push(0);
        for j in 0..words.len() {
            res.paraphrases
                .reference_paths(&para_ids, j, &mut para_paths);
            para_starts.push(para_paths.len());
        }
        Sentence {
            keys: info.iter().map(|w| w.key).collect(),
            para_paths,
            para_starts,
            para_mask: para_ids.iter().fold(0u64, |m, &id| m | 1 << (id % 64)),
            para_ids,
            info,
            words,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.words.len()
    }

    /// Table phrases starting at word `j`: `(length, paraphrase index)`.
    pub(crate) fn paths_at(&self, j: usize) -> &[(usize, u32)] {
        &self.para_paths[self.para_starts[j]..self.para_starts[j + 1]]
    }
}

/// METEOR's `Stage`: candidate matches by line-2 start, and coverage.
#[derive(Debug)]
pub(crate) struct Stage<'a> {
    pub s1: &'a Sentence,
    pub s2: &'a Sentence,
    /// The matches in the order found; after [`Stage::group`], grouped by
    /// line-2 start (stably: each start's matches stay in the order found).
    pub matches: Vec<Match>,
    /// After [`Stage::group`]: the matches starting at line-2 position `j`
    /// are `matches[starts[j]..starts[j + 1]]`.
    pub starts: Vec<usize>,
    pub coverage1: Vec<u32>,
    pub coverage2: Vec<u32>,
}

impl<'a> Stage<'a> {
    pub(crate) fn new(s1: &'a Sentence, s2: &'a Sentence) -> Self {
        Stage {
            s1,
            s2,
            matches: Vec::new(),
            starts: Vec::new(),
            coverage1: vec![0; s1.len()],
            coverage2: vec![0; s2.len()],
        }
    }

    fn push(&mut self, m: Match) {
        for k in 0..m.match_length {
            self.coverage1[m.match_start + k] += 1;
        }
        for k in 0..m.length {
            self.coverage2[m.start + k] += 1;
        }
        self.matches.push(m);
    }

    /// Groups the matches by line-2 start (a stable counting sort), which
    /// is the order of METEOR's per-position lists; call once, after the
    /// matchers.
    pub(crate) fn group(&mut self) {
        let n = self.s2.len();
        let mut starts = vec![0usize; n + 1];
        for m in &self.matches {
            starts[m.start + 1] += 1;
        }
        for j in 0..n {
            starts[j + 1] += starts[j];
        }
        let mut fill = starts.clone();
        let mut grouped = vec![
            Match {
                start: 0,
                length: 0,
                match_start: 0,
                match_length: 0,
                module: 0,
            };
            self.matches.len()
        ];
        for m in &self.matches {
            grouped[fill[m.start]] = *m;
            fill[m.start] += 1;
        }
        self.matches = grouped;
        self.starts = starts;
    }

    /// The matches starting at line-2 position `j` (after [`Stage::group`]).
    pub(crate) fn at(&self, j: usize) -> &[Match] {
        &self.matches[self.starts[j]..self.starts[j + 1]]
    }

    fn one_to_one(&mut self, module: usize, j: usize, i: usize) {
        self.push(Match {
            start: j,
            length: 1,
            match_start: i,
            match_length: 1,
            module,
        });
    }

    /// Same word key.
    pub(crate) fn match_exact(&mut self, module: usize) {
        let (s1, s2) = (self.s1, self.s2);
        for (j, k2) in s2.keys.iter().enumerate() {
            for (i, k1) in s1.keys.iter().enumerate() {
                if k1 == k2 {
                    self.one_to_one(module, j, i);
                }
            }
        }
    }

    /// Different words with the same Snowball English stem (compared, like
    /// the words, by hash key).
    pub(crate) fn match_stem(&mut self, module: usize) {
        let (s1, s2) = (self.s1, self.s2);
        for j in 0..s2.len() {
            for i in 0..s1.len() {
                if s1.info[i].stem_key == s2.info[j].stem_key && s1.keys[i] != s2.keys[j] {
                    self.one_to_one(module, j, i);
                }
            }
        }
    }

    /// Different words sharing a WordNet synset (of the word or of its base
    /// form).
    pub(crate) fn match_synonym(&mut self, module: usize) {
        let (s1, s2) = (self.s1, self.s2);
        for j in 0..s2.len() {
            for i in 0..s1.len() {
                let (a, b) = (&s1.info[i], &s2.info[j]);
                if a.synset_mask & b.synset_mask != 0
                    && intersects(&a.synsets, &b.synsets)
                    && s1.keys[i] != s2.keys[j]
                {
                    self.one_to_one(module, j, i);
                }
            }
        }
    }

    /// Phrases of one line that the table paraphrases as words of the other:
    /// first reference phrases (line 2) found in line 1, then hypothesis
    /// phrases (line 1) found in line 2.
    pub(crate) fn match_paraphrase(&mut self, module: usize, table: &ParaphraseTable) {
        let (s1, s2) = (self.s1, self.s2);
        for j in 0..s2.len() {
            for &(len, p) in s2.paths_at(j) {
                let words = table.paraphrase(p);
                if !may_occur(s1.para_mask, words) {
                    continue;
                }
                for i in 0..s1.len() {
                    if occurs_at(&s1.para_ids, i, words) {
                        self.push(Match {
                            start: j,
                            length: len,
                            match_start: i,
                            match_length: words.len(),
                            module,
                        });
                    }
                }
            }
        }
        for i in 0..s1.len() {
            for &(len, p) in s1.paths_at(i) {
                let words = table.paraphrase(p);
                if !may_occur(s2.para_mask, words) {
                    continue;
                }
                for j in 0..s2.len() {
                    if occurs_at(&s2.para_ids, j, words) {
                        self.push(Match {
                            start: j,
                            length: words.len(),
                            match_start: i,
                            match_length: len,
                            module,
                        });
                    }
                }
            }
        }
    }
}

/// False only if `words` cannot occur in a sentence with this
/// [`Sentence::para_mask`] (its first word is absent).
fn may_occur(mask: u64, words: &[u32]) -> bool {
    words.first().is_none_or(|&w| mask & (1 << (w % 64)) != 0)
}

/// `words` occurs in `line` at `at` (an empty paraphrase occurs everywhere,
/// as in the Java loop). Unknown words never match a table word.
fn occurs_at(line: &[u32], at: usize, words: &[u32]) -> bool {
    if words.first().is_some_and(|&w| line[at] != w) {
        return false;
    }
    words
        .iter()
        .enumerate()
        .all(|(k, &w)| at + k < line.len() && line[at + k] == w && w != UNKNOWN)
}

/// Two sorted id lists share an element.
fn intersects(a: &[u32], b: &[u32]) -> bool {
    let (mut i, mut j) = (0, 0);
    while i < a.len() && j < b.len() {
        match a[i].cmp(&b[j]) {
            std::cmp::Ordering::Less => i += 1,
            std::cmp::Ordering::Greater => j += 1,
            std::cmp::Ordering::Equal => return true,
        }
    }
    false
}
