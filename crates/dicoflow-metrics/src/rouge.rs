//! ROUGE-L as the toolkit's `Rouge` scorer computes it.
//!
//! Per image, precision and recall of the longest common subsequence are
//! maximised separately over the references and combined with β = 1.2; the
//! corpus value is the mean over images. Sentences are split on single spaces
//! (not on white space), so an empty caption is one empty token, as in the
//! toolkit.

use super::numeric::numpy_mean;
use super::scores::Scores;

const BETA: f64 = 1.2;

fn lcs(a: &[&str], b: &[&str]) -> usize {
    let (long, short) = if a.len() >= b.len() { (a, b) } else { (b, a) };
    let mut prev = vec![0usize; short.len() + 1];
    let mut cur = vec![0usize; short.len() + 1];
    for x in long {
        for (j, y) in short.iter().enumerate() {
            cur[j + 1] = if x == y {
                prev[j] + 1
            } else {
                prev[j + 1].max(cur[j])
            };
        }
        std::mem::swap(&mut prev, &mut cur);
    }
    prev[short.len()]
}

/// ROUGE-L of one tokenized candidate against its tokenized references.
pub fn rouge_l_one(candidate: &str, references: &[String]) -> f64 {
    let cand: Vec<&str> = candidate.split(' ').collect();
    let mut prec_max = f64::NEG_INFINITY;
    let mut rec_max = f64::NEG_INFINITY;
    for r in references {
        let toks: Vec<&str> = r.split(' ').collect();
        let l = lcs(&toks, &cand) as f64;
        prec_max = prec_max.max(l / cand.len() as f64);
        rec_max = rec_max.max(l / toks.len() as f64);
    }
    if prec_max != 0.0 && rec_max != 0.0 && !references.is_empty() {
        let b2 = BETA * BETA;
        ((1.0 + b2) * prec_max * rec_max) / (rec_max + b2 * prec_max)
    } else {
        0.0
    }
}

/// ROUGE-L of tokenized candidates against their tokenized references,
/// paired with `zip` (see [`crate::bleu::bleu`]); the corpus value of
/// no images is NaN, as NumPy's mean of an empty array.
pub fn rouge_l(candidates: &[String], references: &[Vec<String>]) -> Scores {
    let per_image: Vec<f64> = candidates
        .iter()
        .zip(references)
        .map(|(c, r)| rouge_l_one(c, r))
        .collect();
    Scores {
        corpus: numpy_mean(&per_image),
        per_image,
    }
}
