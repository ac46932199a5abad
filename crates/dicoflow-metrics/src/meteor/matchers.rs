//! METEOR's four matchers (`ExactMatcher`, `StemMatcher`, `SynonymMatcher`,
//! `ParaphraseMatcher`), run in that order. Each appends candidate matches to
//! the list of the reference (line 2) position where they start, in the
//! Java loops' order, and counts how many matches cover each word; the
//! aligner's search explores the lists in this order, so it is part of the
//! result (ties between equally good alignments go to the earlier match).

use std::cell::OnceCell;
use std::sync::Arc;

use super::align::Resources;
use super::java;
use super::paraphrase::{PairRanges, ParaphraseTable, UNKNOWN};
use crate::numeric::FxMap;

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
    map: FxMap<String, WordInfo>,
    /// Paraphrase-table ranges of the word pairs met.
    pairs: PairRanges,
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

/// A table phrase of a sentence: `len` words from where it starts, and the
/// index and first word of its paraphrase (`None`: an empty paraphrase).
#[derive(Debug, Clone, Copy)]
pub(crate) struct ParaPath {
    pub len: usize,
    pub para: u32,
    pub first: Option<u32>,
}

/// One side of an alignment, with what every matcher needs computed once
/// (the hypothesis is aligned with each reference in turn).
#[derive(Debug)]
pub(crate) struct Sentence {
    /// Per word.
    pub info: Vec<WordInfo>,
    /// `String.hashCode()` of each word (as in `info`, gathered for the
    /// identical-sentence test).
    pub keys: Vec<i32>,
    /// Paraphrase-table id of each word.
    pub para_ids: Vec<u32>,
    /// Table phrases starting at each word: those starting at word `j` are
    /// `para_paths[para_starts[j]..para_starts[j + 1]]`.
    pub para_paths: Vec<ParaPath>,
    pub para_starts: Vec<usize>,
    /// Bit `id % 256` set for each word's paraphrase-table id: lets the
    /// paraphrase matcher skip, without reading it, a paraphrase whose
    /// first word is not in the sentence.
    pub para_mask: [u64; 4],
    /// Made on first use ([`Sentence::synset_positions`]).
    synset_positions: OnceCell<Option<FxMap<u32, u64>>>,
}

impl Sentence {
    /// The sentence of these words (normalized, lowercased).
    pub(crate) fn new<'w>(
        words: impl Iterator<Item = &'w str>,
        res: &Resources,
        cache: &mut WordCache,
    ) -> Self {
        let info: Vec<WordInfo> = words.map(|w| cache.get(w, res)).collect();
        let para_ids: Vec<u32> = info.iter().map(|w| w.para_id).collect();
        let mut found = Vec::new();
        let mut para_paths = Vec::new();
        let mut para_starts = Vec::with_capacity(info.len() + 1);
        para_starts.push(0);
        for j in 0..info.len() {
            found.clear();
            res.paraphrases
                .reference_paths(&para_ids, j, &mut found, &mut cache.pairs);
            para_paths.extend(found.iter().map(|&(len, para)| ParaPath {
                len,
                para,
                first: res.paraphrases.paraphrase(para).first().copied(),
            }));
            para_starts.push(para_paths.len());
        }
        let mut para_mask = [0u64; 4];
        for &id in &para_ids {
            para_mask[(id % 256 / 64) as usize] |= 1 << (id % 64);
        }
        Sentence {
            keys: info.iter().map(|w| w.key).collect(),
            para_paths,
            para_starts,
            para_mask,
            synset_positions: OnceCell::new(),
            para_ids,
            info,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.info.len()
    }

    /// For each synset of any word, the positions of the words that have it
    /// (bit `i` for word `i`); `None` for a sentence of more than 64 words.
    /// Made once per sentence: the hypothesis meets every reference.
    fn synset_positions(&self) -> Option<&FxMap<u32, u64>> {
        self.synset_positions
            .get_or_init(|| {
                (self.len() <= 64).then(|| {
                    let mut map = FxMap::default();
                    for (i, w) in self.info.iter().enumerate() {
                        for &id in w.synsets.iter() {
                            *map.entry(id).or_insert(0u64) |= 1 << i;
                        }
                    }
                    map
                })
            })
            .as_ref()
    }

    /// Table phrases starting at word `j`: `(length, paraphrase index)`.
    pub(crate) fn paths_at(&self, j: usize) -> &[ParaPath] {
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
        if let Some(by_synset) = s1.synset_positions() {
            // The same pairs in the same order as the loops below: for each
            // reference word, the hypothesis words sharing one of its
            // synsets, by increasing position.
            for j in 0..s2.len() {
                let mut share = 0u64;
                for id in s2.info[j].synsets.iter() {
                    share |= by_synset.get(id).copied().unwrap_or(0);
                }
                while share != 0 {
                    let i = share.trailing_zeros() as usize;
                    share &= share - 1;
                    if s1.keys[i] != s2.keys[j] {
                        self.one_to_one(module, j, i);
                    }
                }
            }
            return;
        }
        for j in 0..s2.len() {
            for i in 0..s1.len() {
                let (a, b) = (&s1.info[i], &s2.info[j]);
                // The cheap tests first (identical words share every synset).
                if s1.keys[i] != s2.keys[j]
                    && a.synset_mask & b.synset_mask != 0
                    && intersects(&a.synsets, &b.synsets)
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
            for &ParaPath { len, para, first } in s2.paths_at(j) {
                if !may_occur(&s1.para_mask, first) {
                    continue;
                }
                let words = table.paraphrase(para);
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
            for &ParaPath { len, para, first } in s1.paths_at(i) {
                if !may_occur(&s2.para_mask, first) {
                    continue;
                }
                let words = table.paraphrase(para);
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

/// False only if a paraphrase with this first word cannot occur in a
/// sentence with this [`Sentence::para_mask`] (the word is absent).
fn may_occur(mask: &[u64; 4], first: Option<u32>) -> bool {
    first.is_none_or(|w| mask[(w % 256 / 64) as usize] & (1 << (w % 64)) != 0)
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

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use rust_stemmers::{Algorithm, Stemmer};

    use super::*;
    use crate::meteor::synonym::SynonymDictionary;

    fn resources() -> Resources {
        Resources {
            stemmer: Stemmer::create(Algorithm::English),
            synonyms: SynonymDictionary::parse(
                "",
                "dog\n1 2\nhound\n2\npuppy\n1\ncar\n3\nauto\n3 4\nbig\n5\nlarge\n5 6\n",
            )
            .unwrap(),
            paraphrases: ParaphraseTable::default(),
            function_words: HashSet::new(),
        }
    }

    /// Synonym matches of `hyp` against `reference`, `(reference position,
    /// hypothesis position)` in the order found.
    fn synonym_pairs(hyp: &[&str], reference: &str, res: &Resources) -> Vec<(usize, usize)> {
        let mut cache = WordCache::default();
        let s1 = Sentence::new(hyp.iter().copied(), res, &mut cache);
        let s2 = Sentence::new(reference.split(' '), res, &mut cache);
        let mut stage = Stage::new(&s1, &s2);
        stage.match_synonym(2);
        stage
            .matches
            .iter()
            .map(|m| (m.start, m.match_start))
            .collect()
    }

    #[test]
    fn synonym_map_and_pairwise_loop_agree() {
        let res = resources();
        let base = ["hound", "dog", "the", "large", "auto", "puppy", "car"];
        // 63 words: the synset map; 70 words: the pairwise loop (over 64).
        let short: Vec<&str> = base.iter().copied().cycle().take(63).collect();
        let long: Vec<&str> = short
            .iter()
            .copied()
            .chain(std::iter::repeat_n("zzz", 7))
            .collect();
        let reference = "a dog and a big car near the hound";
        let by_map = synonym_pairs(&short, reference, &res);
        let by_loop = synonym_pairs(&long, reference, &res);
        assert_eq!(by_map, by_loop);
        // dog ~ hound and puppy (not itself), big ~ large, car ~ auto,
        // hound ~ dog: 9 hypothesis positions each for 7-word cycles.
        let count = |j: usize| by_map.iter().filter(|&&(r, _)| r == j).count();
        assert_eq!(count(1), 18);
        assert_eq!(count(4), 9);
        assert_eq!(count(5), 9);
        assert_eq!(count(8), 9);
        assert!(by_map.windows(2).all(|w| w[0] < w[1]));
    }
}
