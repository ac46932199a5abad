//! BLEU-1..4 as the toolkit's `BleuScorer` computes it (option "closest").
//!
//! The corpus score is not a mean of per-image scores: clipped n-gram matches,
//! candidate n-gram counts and lengths are summed over the corpus first. The
//! reference length of each image is the reference length closest to the
//! candidate's (the shorter on ties), and the toolkit's epsilons
//! (`1e-15` added to matches and lengths, `1e-9` to counts) are kept because
//! they decide the value of degenerate cases such as empty candidates.

use super::numeric::{python_split, FxMap};

const SMALL: f64 = 1e-9;
const TINY: f64 = 1e-15;

/// BLEU-1..4 for a corpus and for each image.
#[derive(Debug, Clone, PartialEq)]
pub struct BleuScores {
    /// Corpus BLEU-n at index n-1.
    pub corpus: [f64; 4],
    /// Per image, in input order, BLEU-n at index n-1.
    pub per_image: Vec<[f64; 4]>,
}

/// Per-image sufficient statistics.
struct Stats {
    testlen: usize,
    reflen: usize,
    guess: [usize; 4],
    correct: [usize; 4],
}

/// An n-gram of per-image token ids, padded with `u32::MAX`.
type Gram = [u32; 4];

/// N-gram counts of one sentence (captions are short, so a vector with
/// linear search is faster than a hash map).
fn ngram_counts(words: &[u32], out: &mut Vec<(Gram, usize)>) {
    out.clear();
    for k in 1..=4 {
        for w in words.windows(k) {
            let mut g = [u32::MAX; 4];
            g[..k].copy_from_slice(w);
            match out.iter_mut().find(|(x, _)| *x == g) {
                Some(e) => e.1 += 1,
                None => out.push((g, 1)),
            }
        }
    }
}

fn ids<'a>(vocab: &mut FxMap<&'a str, u32>, s: &'a str) -> Vec<u32> {
    python_split(s)
        .into_iter()
        .map(|w| {
            let next = vocab.len() as u32;
            *vocab.entry(w).or_insert(next)
        })
        .collect()
}

/// Maps reused from image to image.
#[derive(Default)]
struct Scratch<'a> {
    vocab: FxMap<&'a str, u32>,
    max_counts: FxMap<Gram, usize>,
    counts: Vec<(Gram, usize)>,
}

fn stats<'a>(candidate: &'a str, references: &'a [String], scratch: &mut Scratch<'a>) -> Stats {
    let Scratch {
        vocab,
        max_counts,
        counts,
    } = scratch;
    vocab.clear();
    max_counts.clear();
    let ref_words: Vec<Vec<u32>> = references.iter().map(|r| ids(vocab, r)).collect();
    for words in &ref_words {
        ngram_counts(words, counts);
        for &(g, c) in counts.iter() {
            let e = max_counts.entry(g).or_insert(0);
            *e = (*e).max(c);
        }
    }
    let words = ids(vocab, candidate);
    let testlen = words.len();
    // Closest reference length, the shorter one on ties.
    let reflen = ref_words
        .iter()
        .map(|w| (w.len().abs_diff(testlen), w.len()))
        .min()
        .map_or(0, |(_, l)| l);
    let mut guess = [0; 4];
    for (k, g) in guess.iter_mut().enumerate() {
        *g = (testlen + 1).saturating_sub(k + 1);
    }
    let mut correct = [0; 4];
    ngram_counts(&words, counts);
    for &(g, c) in counts.iter() {
        let n = g.iter().take_while(|&&t| t != u32::MAX).count();
        let max = max_counts.get(&g).copied().unwrap_or(0);
        correct[n - 1] += c.min(max);
    }
    Stats {
        testlen,
        reflen,
        guess,
        correct,
    }
}

/// Cumulative BLEU-1..4 from summed statistics, with the brevity penalty.
fn bleu_from(testlen: usize, reflen: usize, guess: &[usize; 4], correct: &[usize; 4]) -> [f64; 4] {
    let mut out = [0.0; 4];
    let mut bleu = 1.0f64;
    for k in 0..4 {
        bleu *= (correct[k] as f64 + TINY) / (guess[k] as f64 + SMALL);
        // black_box keeps the exponent opaque: the compiler would otherwise
        // turn pow(x, 0.5) into sqrt(x), which can differ from libm's pow
        // (used by Python) in the last bit.
        out[k] = bleu.powf(std::hint::black_box(1.0 / (k + 1) as f64));
    }
    let ratio = (testlen as f64 + TINY) / (reflen as f64 + SMALL);
    if ratio < 1.0 {
        let bp = (1.0 - 1.0 / ratio).exp();
        for v in &mut out {
            *v *= bp;
        }
    }
    out
}

/// BLEU of tokenized candidates against their tokenized references
/// (`references[i]` belongs to `candidates[i]`; pairs are formed with `zip`,
/// so surplus entries are ignored: `evaluate::score_tokenized` checks).
pub fn bleu(candidates: &[String], references: &[Vec<String>]) -> BleuScores {
    let mut per_image = Vec::with_capacity(candidates.len());
    let (mut testlen, mut reflen) = (0usize, 0usize);
    let (mut guess, mut correct) = ([0usize; 4], [0usize; 4]);
    let mut scratch = Scratch::default();
    for (cand, refs) in candidates.iter().zip(references) {
        let s = stats(cand, refs, &mut scratch);
        per_image.push(bleu_from(s.testlen, s.reflen, &s.guess, &s.correct));
        testlen += s.testlen;
        reflen += s.reflen;
        for k in 0..4 {
            guess[k] += s.guess[k];
            correct[k] += s.correct[k];
        }
    }
    BleuScores {
        corpus: bleu_from(testlen, reflen, &guess, &correct),
        per_image,
    }
}
